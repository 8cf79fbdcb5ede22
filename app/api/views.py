"""The JSON API (`/api/v1`): read executions, their events; queue a manual restart."""

from __future__ import annotations

import hmac
from typing import Any

from flask import Blueprint, Response, jsonify, request
from marshmallow import Schema, ValidationError

from app.api.schemas import (
    AttemptSchema,
    DecisionSchema,
    EventSchema,
    ExecutionListArgs,
    ExecutionSummarySchema,
    HostFailureSchema,
    PageArgs,
    RestartSchema,
    RunSchema,
)
from app.db import get_session
from app.errors import Invalid, Unauthorized
from app.queries import (
    ExecutionDetail,
    ExecutionFilters,
    execution_detail,
    get_execution,
    list_events,
    list_executions,
)
from app.settings import get_settings

bp = Blueprint("api", __name__, url_prefix="/api/v1")

_summary = ExecutionSummarySchema()
_runs = RunSchema(many=True)
_failures = HostFailureSchema(many=True)
_decisions = DecisionSchema(many=True)
_restarts = RestartSchema(many=True)
_attempts = AttemptSchema(many=True)
_events = EventSchema(many=True)


@bp.before_request
def _require_token() -> None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    tokens = get_settings().api_tokens
    if scheme.lower() != "bearer" or not token or not tokens:
        raise Unauthorized("send Authorization: Bearer <token> (one of RESPAWN_API_TOKENS)")
    known = False
    for candidate in tokens:
        known |= hmac.compare_digest(token.strip().encode(), candidate.encode())
    if not known:
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


@bp.get("/executions")
def executions_index() -> Response:
    args = load_args(ExecutionListArgs(), request.args)
    filters = ExecutionFilters(
        status=tuple(args["status"]), account=args["account"], job=args["job"], host=args["host"]
    )
    page = list_executions(get_session(), filters, args["limit"], args["cursor"])
    return jsonify({"items": _summary.dump(page.items, many=True), "next_cursor": page.next_cursor})


@bp.get("/executions/<execution_id>")
def executions_show(execution_id: str) -> Response:
    return jsonify(serialize_detail(execution_detail(get_session(), execution_id)))


@bp.get("/executions/<execution_id>/events")
def executions_events(execution_id: str) -> Response:
    args = load_args(PageArgs(), request.args)
    session = get_session()
    execution = get_execution(session, execution_id)
    page = list_events(session, execution, args["limit"], args["cursor"])
    return jsonify({"items": _events.dump(page.items), "next_cursor": page.next_cursor})
