"""The JSON API (`/api/v1`): read executions, their events; queue a manual restart."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from flask import Blueprint, Response, jsonify, request
from marshmallow import Schema, ValidationError
from sqlalchemy.orm import Session

from app.core.errors import Invalid, Malformed, NotFound
from app.core.operator import cancel_restart, manual_restart, pause_automatic, resume_automatic
from app.core.queries import (
    ExecutionDetail,
    ExecutionFilters,
    execution_detail,
    get_execution,
    list_events,
    list_executions,
)
from app.core.signatures import close_signature, open_signatures, signature_view
from app.core.stats import list_pauses
from app.db import utcnow
from app.extensions import current_policy, get_session, get_settings, wake_dispatcher
from app.web.access import token_known
from app.web.api.openapi import openapi_document
from app.web.api.schemas import (
    AttemptSchema,
    DecisionSchema,
    EventSchema,
    ExecutionListArgs,
    ExecutionSummarySchema,
    HostFailureSchema,
    ManualRestartArgs,
    PageArgs,
    RestartSchema,
    RunSchema,
    SignatureSchema,
)
from app.web.errors import Unauthorized, UnsupportedMediaType
from app.web.inputs import loads_strict

bp = Blueprint("api", __name__, url_prefix="/api/v1")

_summary = ExecutionSummarySchema()
_runs = RunSchema(many=True)
_failures = HostFailureSchema(many=True)
_decisions = DecisionSchema(many=True)
_restarts = RestartSchema(many=True)
_attempts = AttemptSchema(many=True)
_events = EventSchema(many=True)
_signatures = SignatureSchema(many=True)


@bp.before_request
def _require_token() -> None:
    if request.endpoint == "api.openapi":
        return
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    tokens = get_settings().api_tokens
    if scheme.lower() != "bearer" or not token or not tokens:
        raise Unauthorized("send Authorization: Bearer <token> (one of RESPAWN_API_TOKENS)")
    if not token_known(token.strip(), tokens):
        raise Unauthorized("unknown API token")


def load_args(schema: Schema, data: Any) -> dict[str, Any]:
    try:
        loaded: dict[str, Any] = schema.load(data)
    except ValidationError as exc:
        fields = exc.messages if isinstance(exc.messages, dict) else {"_schema": exc.messages}
        raise Invalid("invalid request arguments", fields=fields) from None
    return loaded


def serialize_detail(detail: ExecutionDetail) -> dict[str, Any]:
    body: dict[str, Any] = _summary.dump(detail.execution)
    body["job_description"] = detail.job.description if detail.job else None
    body["repository_log"] = detail.execution.repository_log
    body["timers"] = _runs.dump(detail.runs)
    body["host_failures"] = _failures.dump(detail.failures)
    body["decisions"] = _decisions.dump(detail.decisions)
    restarts = _restarts.dump(detail.restarts)
    for restart, dumped in zip(detail.restarts, restarts, strict=True):
        dumped["attempt_log"] = _attempts.dump(detail.attempts.get(restart.id, []))
    body["restarts"] = restarts
    return body


@bp.get("/openapi.json")
def openapi() -> Response:
    return jsonify(openapi_document())


@bp.get("/executions")
def executions_index() -> Response:
    args = load_args(ExecutionListArgs(), request.args)
    filters = ExecutionFilters(
        status=tuple(args["status"]), account=args["account"], job=args["job"], host=args["host"]
    )
    page = list_executions(get_session(), filters, args["limit"], args["cursor"])
    return jsonify({"items": _summary.dump(page.items, many=True), "next_cursor": page.next_cursor})


@bp.get("/executions/<segment:execution_id>")
def executions_show(execution_id: str) -> Response:
    return jsonify(serialize_detail(execution_detail(get_session(), execution_id)))


@bp.get("/executions/<segment:execution_id>/events")
def executions_events(execution_id: str) -> Response:
    args = load_args(PageArgs(), request.args)
    session = get_session()
    execution = get_execution(session, execution_id)
    page = list_events(session, execution, args["limit"], args["cursor"])
    return jsonify({"items": _events.dump(page.items), "next_cursor": page.next_cursor})


def _actor() -> str:
    """API callers are named by a fingerprint of their token, never the token itself."""
    token = request.headers.get("Authorization", "").partition(" ")[2].strip()
    return "api:" + hashlib.sha256(token.encode()).hexdigest()[:8]


def _json_body() -> Any:
    raw = request.get_data(cache=True)
    if not raw:
        return {}
    if not request.is_json:
        raise UnsupportedMediaType("send the body as application/json")
    try:
        body = loads_strict(raw)
    except (ValueError, RecursionError):
        raise Malformed("the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise Invalid("expected a JSON object", fields={"_schema": ["Expected an object."]})
    return body


def _committed(work: Callable[[Session], Any]) -> Any:
    session = get_session()
    with session.begin():
        result = work(session)
    return result


@bp.post("/executions/<segment:execution_id>/restart")
def executions_restart(execution_id: str) -> tuple[Response, int]:
    args = load_args(ManualRestartArgs(), _json_body())
    policy = current_policy().policy
    stored = _committed(
        lambda s: manual_restart(
            s, execution_id, args["hosts"], _actor(), utcnow(), policy, args["reason"]
        )
    )
    wake_dispatcher()
    body = {
        "decision": _decisions.dump([stored.decision])[0],
        "restart": _restarts.dump([stored.restart])[0],
    }
    return jsonify(body), 202


@bp.post("/restarts/<row_id:restart_id>/cancel")
def restarts_cancel(restart_id: int) -> Response:
    restart = _committed(lambda s: cancel_restart(s, restart_id, _actor(), utcnow()))
    return jsonify(_restarts.dump([restart])[0])


def _pause_key(scope: str) -> str | None:
    return None if scope == "global" else scope


@bp.get("/pauses")
def pauses_index() -> Response:
    pauses = list_pauses(get_session())
    return jsonify(
        {
            "items": [
                {
                    "scope": "global" if not p.job_id else "job",
                    "job_id": p.job_id or None,
                    "paused_by": p.paused_by,
                    "reason": p.reason,
                    "paused_at": p.paused_at.isoformat(),
                }
                for p in pauses
            ]
        }
    )


@bp.put("/pauses/global", defaults={"job_id": "global"})
@bp.put("/pauses/jobs/<segment:job_id>")
def pauses_put(job_id: str) -> tuple[Response, int]:
    body = _json_body()
    reason = body.get("reason")
    if reason is not None and (not isinstance(reason, str) or len(reason) > 255):
        raise Invalid("invalid reason", fields={"reason": ["At most 255 characters."]})
    policy = current_policy().policy
    _committed(lambda s: pause_automatic(s, _pause_key(job_id), _actor(), utcnow(), reason, policy))
    return jsonify({"paused": True, "scope": job_id}), 200


@bp.delete("/pauses/global", defaults={"job_id": "global"})
@bp.delete("/pauses/jobs/<segment:job_id>")
def pauses_delete(job_id: str) -> Response:
    policy = current_policy().policy
    resumed = _committed(
        lambda s: resume_automatic(s, _pause_key(job_id), _actor(), utcnow(), policy)
    )
    if not resumed:
        raise NotFound("automatic restarts were not paused there")
    wake_dispatcher()
    return jsonify({"paused": False, "scope": job_id})


@bp.get("/signatures")
def signatures_index() -> Response:
    """Error signatures whose breaker is open, or that still hold restarts."""
    views = open_signatures(get_session(), current_policy().policy, utcnow())
    return jsonify({"items": _signatures.dump(views)})


@bp.get("/signatures/<segment:key>")
def signatures_show(key: str) -> Response:
    view = signature_view(get_session(), current_policy().policy, key, utcnow())
    if view is None:
        raise NotFound(f"no error signature {key!r}")
    return jsonify(_signatures.dump([view])[0])


@bp.post("/signatures/<segment:key>/close")
def signatures_close(key: str) -> Response:
    """Close a signature's breaker by hand (audited): the restarts it held are released."""
    policy = current_policy().policy
    now = utcnow()
    _, released = _committed(lambda s: close_signature(s, key, _actor(), now, policy))
    wake_dispatcher()
    view = signature_view(get_session(), policy, key, now)
    body = _signatures.dump([view])[0] if view is not None else {"key": key}
    return jsonify({**body, "released": released.released, "dropped": released.dropped})
