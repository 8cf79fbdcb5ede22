"""The JSON API (`/api/v1`): read executions, their events; queue a manual restart."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request
from marshmallow import Schema, ValidationError
from sqlalchemy.orm import Session

from app.core.errors import Invalid, Malformed, NotFound, quoted
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
from app.web.api.schemas import (
    ClosedSignatureSchema,
    EventPageSchema,
    ExecutionDetailSchema,
    ExecutionListArgs,
    ExecutionPageSchema,
    ManualRestartArgs,
    PageArgs,
    PauseArgs,
    PauseListSchema,
    PauseStateSchema,
    QueuedRestartSchema,
    RestartSchema,
    SignatureListSchema,
    SignatureSchema,
)
from app.web.errors import Unauthorized, UnsupportedMediaType
from app.web.inputs import check_storable, loads_strict
from app.web.openapi import Answer, documented, openapi_document

bp = Blueprint("api", __name__, url_prefix="/api/v1")

_execution_page = ExecutionPageSchema()
_execution_detail = ExecutionDetailSchema()
_event_page = EventPageSchema()
_queued = QueuedRestartSchema()
_restart = RestartSchema()
_pauses = PauseListSchema()
_pause_state = PauseStateSchema()
_signatures = SignatureListSchema()
_signature = SignatureSchema()
_closed = ClosedSignatureSchema()

API = "api"


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


class _With:
    """A row seen through a schema with a few more attributes (the detail's extra parts)."""

    def __init__(self, row: object, **extra: Any) -> None:
        self._row = row
        self.__dict__.update(extra)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._row, name)


def serialize_detail(detail: ExecutionDetail) -> dict[str, Any]:
    restarts = [
        _With(restart, attempt_log=detail.attempts.get(restart.id, []))
        for restart in detail.restarts
    ]
    view = _With(
        detail.execution,
        job_description=detail.job.description if detail.job else None,
        timers=detail.runs,
        host_failures=detail.failures,
        left_failed_hosts=detail.left_failed,
        decisions=detail.decisions,
        restarts=restarts,
    )
    body: dict[str, Any] = _execution_detail.dump(view)
    return body


@bp.get("/openapi.json")
@documented(
    "This document",
    Answer(200, "the OpenAPI 3.1 description of the HTTP interface", {"type": "object"}),
    tag=API,
)
def openapi() -> Response:
    return jsonify(openapi_document(current_app))


@bp.get("/executions")
@documented(
    "Executions, newest activity first (keyset pages, stable under inserts)",
    Answer(200, "a page", ExecutionPageSchema),
    errors=(400, 422),
    query=ExecutionListArgs,
    secured=True,
    tag=API,
)
def executions_index() -> Response:
    args = load_args(ExecutionListArgs(), request.args)
    filters = ExecutionFilters(
        status=tuple(args["status"]), account=args["account"], job=args["job"], host=args["host"]
    )
    page = list_executions(get_session(), filters, args["limit"], args["cursor"])
    return jsonify(_execution_page.dump(page))


@bp.get("/executions/<segment:execution_id>")
@documented(
    "State, timers (one per run), host failures, decisions, restarts and their attempts",
    Answer(200, "the execution", ExecutionDetailSchema),
    errors=(404,),
    secured=True,
    tag=API,
)
def executions_show(execution_id: str) -> Response:
    return jsonify(serialize_detail(execution_detail(get_session(), execution_id)))


@bp.get("/executions/<segment:execution_id>/events")
@documented(
    "Stored deliveries in the order received, payloads redacted",
    Answer(200, "a page", EventPageSchema),
    errors=(400, 404, 422),
    query=PageArgs,
    secured=True,
    tag=API,
)
def executions_events(execution_id: str) -> Response:
    args = load_args(PageArgs(), request.args)
    session = get_session()
    execution = get_execution(session, execution_id)
    page = list_events(session, execution, args["limit"], args["cursor"])
    return jsonify(_event_page.dump(page))


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
        check_storable(body)
    except (ValueError, RecursionError):
        raise Malformed("the body is not valid JSON text") from None
    if not isinstance(body, dict):
        raise Invalid("expected a JSON object", fields={"_schema": ["Expected an object."]})
    return body


def _committed(work: Callable[[Session], Any]) -> Any:
    session = get_session()
    with session.begin():
        result = work(session)
    return result


@bp.post("/executions/<segment:execution_id>/restart")
@documented(
    "Queue a manual restart (every failed host unless `hosts` names some)",
    Answer(202, "queued: the decision and the restart", QueuedRestartSchema),
    errors=(400, 404, 409, 415, 422),
    body=ManualRestartArgs,
    secured=True,
    tag=API,
)
def executions_restart(execution_id: str) -> tuple[Response, int]:
    args = load_args(ManualRestartArgs(), _json_body())
    policy = current_policy().policy
    stored = _committed(
        lambda s: manual_restart(
            s, execution_id, args["hosts"], _actor(), utcnow(), policy, args["reason"]
        )
    )
    wake_dispatcher()
    return jsonify(_queued.dump(stored)), 202


@bp.post("/restarts/<row_id:restart_id>/cancel")
@documented(
    "Cancel a restart that has not been sent (pending or held)",
    Answer(200, "cancelled", RestartSchema),
    errors=(404, 409),
    secured=True,
    tag=API,
)
def restarts_cancel(restart_id: int) -> Response:
    restart = _committed(lambda s: cancel_restart(s, restart_id, _actor(), utcnow()))
    return jsonify(_restart.dump(restart))


def _pause_scope(job_id: str | None) -> str:
    """The `scope` an answer names: "global", or the job (a job may be named "global" too:
    its routes are apart, `/pauses/jobs/global` is that job's)."""
    return "global" if job_id is None else job_id


@bp.get("/pauses")
@documented(
    "Pauses of automatic restarts in force",
    Answer(200, "the pauses", PauseListSchema),
    secured=True,
    tag=API,
)
def pauses_index() -> Response:
    return jsonify(_pauses.dump({"items": list_pauses(get_session())}))


@bp.put("/pauses/global", defaults={"job_id": None})
@bp.put("/pauses/jobs/<segment:job_id>")
@documented(
    "Pause automatic restarts (of every job, or of one)",
    Answer(200, "paused", PauseStateSchema),
    errors=(400, 415, 422),
    body=PauseArgs,
    secured=True,
    tag=API,
)
def pauses_put(job_id: str | None) -> tuple[Response, int]:
    reason = load_args(PauseArgs(), _json_body())["reason"]
    policy = current_policy().policy
    _committed(lambda s: pause_automatic(s, job_id, _actor(), utcnow(), reason, policy))
    return jsonify(_pause_state.dump({"paused": True, "scope": _pause_scope(job_id)})), 200


@bp.delete("/pauses/global", defaults={"job_id": None})
@bp.delete("/pauses/jobs/<segment:job_id>")
@documented(
    "Resume automatic restarts (of every job, or of one)",
    Answer(200, "resumed", PauseStateSchema),
    errors=(404,),
    secured=True,
    tag=API,
)
def pauses_delete(job_id: str | None) -> Response:
    policy = current_policy().policy
    resumed = _committed(lambda s: resume_automatic(s, job_id, _actor(), utcnow(), policy))
    if not resumed:
        raise NotFound("automatic restarts were not paused there")
    wake_dispatcher()
    return jsonify(_pause_state.dump({"paused": False, "scope": _pause_scope(job_id)}))


@bp.get("/signatures")
@documented(
    "Error signatures whose breaker is open, or that still hold restarts",
    Answer(200, "the signatures", SignatureListSchema),
    secured=True,
    tag=API,
)
def signatures_index() -> Response:
    views = open_signatures(get_session(), current_policy().policy, utcnow())
    return jsonify(_signatures.dump({"items": views}))


@bp.get("/signatures/<segment:key>")
@documented(
    "One error signature and its breaker",
    Answer(200, "the signature", SignatureSchema),
    errors=(404,),
    secured=True,
    tag=API,
)
def signatures_show(key: str) -> Response:
    view = signature_view(get_session(), current_policy().policy, key, utcnow())
    if view is None:
        raise NotFound(f"no error signature {quoted(key)}")
    return jsonify(_signature.dump(view))


@bp.post("/signatures/<segment:key>/close")
@documented(
    "Close a signature's breaker by hand (audited): the restarts it held are released",
    Answer(200, "closed; what became of the restarts it held", ClosedSignatureSchema),
    errors=(404,),
    secured=True,
    tag=API,
)
def signatures_close(key: str) -> Response:
    policy = current_policy().policy
    now = utcnow()
    _, released = _committed(lambda s: close_signature(s, key, _actor(), now, policy))
    wake_dispatcher()
    view = signature_view(get_session(), policy, key, now)
    counts = {"released": released.released, "dropped": released.dropped}
    return jsonify(_closed.dump(_With(view, **counts) if view else {"key": key, **counts}))
