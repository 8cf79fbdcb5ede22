"""HTTP adapters of the simulator: the Runner API, and the `/_sim/` control API."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping
from typing import Any

from flask import Blueprint, Flask, Response, current_app, g, jsonify, request
from werkzeug.exceptions import HTTPException

from app.simulator.config import SettingsError
from app.simulator.scripts import ScriptError
from app.simulator.shapes import MAX_PAGE_SIZE, NO_RESOURCE, SimError, invalid
from app.simulator.state import Simulator

EXTENSION = "runner_simulator"
RESTART_ENDPOINT = "runner_api.restart"

api = Blueprint("runner_api", __name__)
control = Blueprint("sim_control", __name__, url_prefix="/_sim")

_ERROR_PAGES = {
    500: ("application/json", json.dumps({"message": "An error has occurred."})),
    502: ("text/html", "<html><body><h1>502 Bad Gateway</h1></body></html>"),
    503: ("application/json", json.dumps({"message": "The service is unavailable."})),
    504: ("text/html", "<html><body><h1>504 Gateway Time-out</h1></body></html>"),
}


def simulator() -> Simulator:
    sim: Simulator = current_app.extensions[EXTENSION]
    return sim


def _body() -> Any:
    raw = request.get_data(cache=True)
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except ValueError:
        raise invalid({"body": ["The body is not valid JSON."]}) from None


def _object_body() -> Mapping[str, Any]:
    body = _body()
    if body is None:
        return {}
    if not isinstance(body, Mapping):
        raise invalid({"body": ["The body must be a JSON object."]})
    return body


def _paging(default_size: int = MAX_PAGE_SIZE) -> tuple[int, int]:
    errors = {}
    try:
        page = int(request.args.get("page", 0))
    except ValueError:
        page = -1
    try:
        size = int(request.args.get("size", default_size))
    except ValueError:
        size = 0
    if page < 0:
        errors["page"] = ["page must be a whole number >= 0."]
    if not 1 <= size <= MAX_PAGE_SIZE:
        errors["size"] = [f"size must be between 1 and {MAX_PAGE_SIZE}."]
    if errors:
        raise invalid(errors)
    return page, size


def _fault_response(status: int) -> Response:
    content_type, text = _ERROR_PAGES[status]
    return Response(text, status=status, content_type=content_type)


# -- the Runner API -------------------------------------------------------------------------


@api.before_request
def _before_api() -> Response | None:
    sim = simulator()
    endpoint = request.endpoint or "unknown"
    sim.calls.request(endpoint)
    if endpoint == RESTART_ENDPOINT and request.view_args:
        g.restart_call = sim.calls.restart_received(
            str(request.view_args.get("execution_id")), sim.now_ms()
        )
    fault = sim.faults.for_request(request.method, request.path)
    if fault.delay and not sim.faults.sleep(fault.delay):
        return _fault_response(503)
    if fault.status is not None:
        return _fault_response(fault.status)
    if endpoint != "runner_api.login":
        g.claims = sim.authenticate(request.headers.get("Authorization"))
        account = (request.view_args or {}).get("account")
        if account is not None:
            sim.check_account(g.claims, str(account))
    return None


@api.after_request
def _after_api(response: Response) -> Response:
    entry = g.get("restart_call")
    if entry is not None:
        simulator().calls.note(entry, status=response.status_code)
    return response


@api.post("/v2/authentication/login")
def login() -> Any:
    return jsonify(simulator().login(_body()))


@api.route("/jobs/<account>", methods=["POST", "PUT"])
def create_job(account: str) -> Any:
    immediate = request.args.get("immediate", "false").lower() == "true"
    return jsonify([simulator().create_job(account, _body(), immediate)])


@api.get("/jobs/<account>")
def list_jobs(account: str) -> Any:
    page, size = _paging()
    return jsonify(simulator().list_jobs(account, page, size))


@api.get("/jobs/<account>/executions")
def list_account_executions(account: str) -> Any:
    page, size = _paging()
    return jsonify(simulator().list_executions(account, None, page, size))


@api.get("/jobs/<account>/<job_id>")
def get_job(account: str, job_id: str) -> Any:
    return jsonify([simulator().get_job(account, job_id)])


@api.route("/jobs/<account>/<job_id>", methods=["PUT", "POST"])
def update_job(account: str, job_id: str) -> Any:
    return jsonify([simulator().update_job(account, job_id, _body())])


@api.delete("/jobs/<account>/<job_id>")
def delete_job(account: str, job_id: str) -> Any:
    simulator().delete_job(account, job_id)
    return Response(status=204)


@api.post("/jobs/<account>/<job_id>/start")
def start_job(account: str, job_id: str) -> Any:
    return jsonify(simulator().start_job(account, job_id, _body()))


@api.get("/jobs/<account>/<job_id>/executions")
def list_job_executions(account: str, job_id: str) -> Any:
    page, size = _paging()
    return jsonify(simulator().list_executions(account, job_id, page, size))


@api.get("/jobs/<account>/<job_id>/executions/<execution_id>")
def get_execution(account: str, job_id: str, execution_id: str) -> Any:
    return jsonify(simulator().get_execution(account, job_id, execution_id))


@api.post("/jobs/<account>/<job_id>/executions/<execution_id>/restart")
def restart(account: str, job_id: str, execution_id: str) -> Any:
    sim = simulator()
    entry = g.get("restart_call") or {}
    body = _body()
    stage = sim.faults.hold_stage()
    if stage == "before" and sim.faults.hold(execution_id, "before") == "fail":
        return _fault_response(503)
    hosts = body.get("hosts") if isinstance(body, Mapping) else None
    sim.calls.note(
        entry,
        hosts=[h.get("id") for h in hosts if isinstance(h, Mapping)]
        if isinstance(hosts, list)
        else None,
        ssh_key=isinstance(body, Mapping) and bool(body.get("sshPrivateKey")),
        host_keys=[h.get("id") for h in hosts if isinstance(h, Mapping) and h.get("sshPrivateKey")]
        if isinstance(hosts, list)
        else [],
    )
    document = sim.restart(account, job_id, execution_id, body)
    sim.calls.note(entry, applied=True)
    if stage == "after" and sim.faults.hold(execution_id, "after") == "fail":
        return _fault_response(503)
    return jsonify(document)


@api.post("/jobs/<account>/<job_id>/executions/<execution_id>/stop")
def stop(account: str, job_id: str, execution_id: str) -> Any:
    return jsonify(simulator().stop(account, job_id, execution_id, kill=False))


@api.post("/jobs/<account>/<job_id>/executions/<execution_id>/kill")
def kill(account: str, job_id: str, execution_id: str) -> Any:
    return jsonify(simulator().stop(account, job_id, execution_id, kill=True))


def _status_paging() -> tuple[int | None, int | None]:
    """`page`/`size` of a status API call, or (None, None) when neither was given."""
    if "page" in request.args or "size" in request.args:
        return _paging()
    return None, None


@api.get("/status/<account>/job/<job_id>/execution/<execution_id>")
def status_events(account: str, job_id: str, execution_id: str) -> Any:
    page, size = _status_paging()
    return jsonify(simulator().status_events(account, job_id, execution_id, page, size))


@api.get("/status/<account>/job/<job_id>")
def job_status_events(account: str, job_id: str) -> Any:
    page, size = _status_paging()
    return jsonify(simulator().job_status_events(account, job_id, page, size))


# -- the control API (tests and demos; loopback only) ---------------------------------------


@control.before_request
def _loopback_only() -> Response | None:
    try:
        loopback = ipaddress.ip_address(request.remote_addr or "").is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        return Response(
            json.dumps({"message": "the control API answers loopback clients only"}),
            status=403,
            content_type="application/json",
        )
    return None


@control.get("/health")
def health() -> Any:
    return jsonify({"ok": True})


@control.get("/state")
def state() -> Any:
    sim = simulator()
    counts: dict[str, int] = {}
    for ex in sim.executions():
        counts[ex["status"]] = counts.get(ex["status"], 0) + 1
    return jsonify(
        {
            "settings": sim.settings(),
            "faults": sim.faults.faults.as_dict(),
            "variants": sim.variants.as_dict(),
            "engine": type(sim.engine).__name__,
            "scripts": sim.scripts(),
            "executions": counts,
            "tokens_active": sim.tokens.active,
            "held": sim.faults.held(),
            "callbacks_pending": sim.callbacks.pending,
        }
    )


@control.route("/faults", methods=["GET", "POST", "DELETE"])
def faults() -> Any:
    sim = simulator()
    if request.method == "DELETE":
        sim.faults.replace(type(sim.faults.faults)())
    elif request.method == "POST":
        sim.faults.update(_object_body())
    return jsonify({**sim.faults.faults.as_dict(), "injected": dict(sim.faults.injected)})


@control.route("/variants", methods=["GET", "POST", "DELETE"])
def variants() -> Any:
    sim = simulator()
    if request.method == "DELETE":
        return jsonify(sim.clear_variants().as_dict())
    if request.method == "POST":
        return jsonify(sim.set_variants(_object_body()).as_dict())
    return jsonify(sim.variants.as_dict())


@control.route("/settings", methods=["GET", "POST"])
def settings() -> Any:
    sim = simulator()
    if request.method == "POST":
        return jsonify(sim.update_settings(_object_body()))
    return jsonify(sim.settings())


@control.post("/tokens/expire")
def expire_tokens() -> Any:
    return jsonify({"revoked": simulator().expire_tokens()})


@control.route("/scripts", methods=["GET", "POST", "DELETE"])
def scripts() -> Any:
    sim = simulator()
    if request.method == "DELETE":
        return jsonify(sim.set_scripts({}, replace=True))
    if request.method == "POST":
        body = _object_body()
        rules = body.get("hosts", {})
        if not isinstance(rules, Mapping):
            raise invalid({"hosts": ["a map of host glob to script"]})
        return jsonify(sim.set_scripts(rules, replace=bool(body.get("replace"))))
    return jsonify(sim.scripts())


@control.get("/held")
def held() -> Any:
    return jsonify(simulator().faults.held())


@control.post("/held/wait")
def wait_held() -> Any:
    body = _object_body()
    count = body.get("count", 1)
    timeout = body.get("timeout", 5)
    if not isinstance(count, int) or not isinstance(timeout, int | float) or not 0 <= timeout <= 60:
        raise invalid({"count": ["whole number"], "timeout": ["seconds in 0..60"]})
    sim = simulator()
    reached = sim.faults.wait_held(count, float(timeout))
    return jsonify({"reached": reached, "held": sim.faults.held()})


@control.post("/release")
def release() -> Any:
    body = _object_body()
    action = body.get("action", "proceed")
    if action not in ("proceed", "fail"):
        raise invalid({"action": ["'proceed' (apply and answer) or 'fail' (answer 503)"]})
    released = simulator().faults.release(body.get("execution_id"), action, body.get("stage"))
    return jsonify({"released": released})


@control.get("/calls")
def calls() -> Any:
    sim = simulator()
    return jsonify({**sim.calls.snapshot(), "faults_injected": dict(sim.faults.injected)})


@control.get("/deliveries")
def deliveries() -> Any:
    return jsonify(simulator().callbacks.deliveries())


@control.post("/deliveries/wait")
def wait_deliveries() -> Any:
    timeout = _object_body().get("timeout", 5)
    if not isinstance(timeout, int | float) or not 0 <= timeout <= 60:
        raise invalid({"timeout": ["seconds in 0..60"]})
    return jsonify({"idle": simulator().callbacks.wait_idle(float(timeout))})


@control.post("/advance")
def advance() -> Any:
    body = _object_body()
    sim = simulator()
    if body.get("until_idle"):
        max_ticks = body.get("max_ticks", 10_000)
        if not isinstance(max_ticks, int) or not 1 <= max_ticks <= 1_000_000:
            raise invalid({"max_ticks": ["whole number in 1..1000000"]})
        try:
            ticks = sim.advance_until_idle(max_ticks)
        except RuntimeError as exc:
            raise SimError(409, str(exc)) from None
        return jsonify({"ticks": ticks, "active": 0})
    ticks = body.get("ticks", 1)
    if not isinstance(ticks, int) or not 1 <= ticks <= 1_000_000:
        raise invalid({"ticks": ["whole number in 1..1000000"]})
    return jsonify({"ticks": ticks, "active": sim.advance(ticks)})


@control.post("/reset")
def reset() -> Any:
    simulator().reset()
    return jsonify({"reset": True})


@control.get("/executions")
def executions() -> Any:
    return jsonify(simulator().executions())


@control.get("/executions/<execution_id>")
def execution(execution_id: str) -> Any:
    try:
        return jsonify(simulator().execution(execution_id))
    except KeyError:
        raise SimError(404, f"Execution {execution_id} was not found.") from None


@control.post("/fleet")
def fleet() -> Any:
    return jsonify(simulator().create_fleet(_object_body()))


# -- errors ---------------------------------------------------------------------------------


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(SimError)
    def _sim_error(exc: SimError) -> Any:
        return jsonify(exc.body()), exc.status

    @app.errorhandler(SettingsError)
    @app.errorhandler(ScriptError)
    def _bad_setting(exc: ValueError) -> Any:
        return jsonify({"message": str(exc)}), 400

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Any:
        status = exc.code or 500
        message = NO_RESOURCE if status == 404 else exc.description or "request failed"
        return jsonify({"message": message}), status

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Any:
        current_app.logger.exception("simulator error on %s %s", request.method, request.path)
        return jsonify({"message": "An error has occurred."}), 500
