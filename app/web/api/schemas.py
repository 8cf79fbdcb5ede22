"""The JSON API's query arguments, bodies and answers; the OpenAPI document is made from them."""

from __future__ import annotations

from typing import Any, ClassVar

from marshmallow import EXCLUDE, Schema, ValidationError, fields, pre_load, validate

from app.models import RestartState
from app.runner.documents import MAX_ID_LENGTH, STATUSES

# PostgreSQL cannot compare text with a NUL character: a filter holding one is refused.
NO_NUL = validate.Regexp(r"^[^\x00]*$", error="No NUL characters.")

CURSOR = fields.String(
    validate=validate.Length(max=512),
    load_default=None,
    metadata={
        "description": "`next_cursor` of the previous page (unpadded base64url)",
        "pattern": "^[A-Za-z0-9_-]*$",
    },
)
NEXT_CURSOR = fields.String(
    allow_none=True,
    metadata={"description": "the cursor of the next page; null on the last one"},
)


class ExecutionListArgs(Schema):
    class Meta:
        unknown = EXCLUDE

    status = fields.List(
        fields.String(validate=validate.OneOf(STATUSES)),
        load_default=list,
        metadata={"description": "statuses to match (repeated, or comma-separated)"},
    )
    account = fields.String(validate=[validate.Length(min=1, max=128), NO_NUL], load_default=None)
    job = fields.String(validate=[validate.Length(min=1, max=128), NO_NUL], load_default=None)
    host = fields.String(validate=[validate.Length(min=1, max=255), NO_NUL], load_default=None)
    limit = fields.Integer(validate=validate.Range(min=1, max=500), load_default=50)
    cursor = CURSOR

    @pre_load
    def _split_status(self, data: Any, **_kwargs: Any) -> Any:
        statuses: list[str] = []
        for value in data.getlist("status") if hasattr(data, "getlist") else []:
            statuses.extend(part.strip().upper() for part in value.split(",") if part.strip())
        flat = {key: data.get(key) for key in data if key != "status"}
        if statuses:
            flat["status"] = statuses
        return flat


class PageArgs(Schema):
    class Meta:
        unknown = EXCLUDE

    limit = fields.Integer(validate=validate.Range(min=1, max=500), load_default=100)
    cursor = CURSOR


class HostRef(fields.Field[str]):
    json_schema: ClassVar[dict[str, Any]] = {
        "type": "string",
        "minLength": 1,
        "maxLength": 255,
        "pattern": r"\S",
    }

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        if not isinstance(value, str) or not value.strip() or len(value) > 255:
            raise ValidationError("Not a host id.")
        return value.strip()


class ManualRestartArgs(Schema):
    class Meta:
        unknown = EXCLUDE

    hosts = fields.List(
        HostRef(),
        load_default=None,
        allow_none=True,
        metadata={"description": "hosts to restart; null or absent: every failed host"},
    )
    reason = fields.String(validate=validate.Length(max=255), load_default=None)


class PauseArgs(Schema):
    class Meta:
        unknown = EXCLUDE

    reason = fields.String(validate=validate.Length(max=255), allow_none=True, load_default=None)


class RunSchema(Schema):
    run = fields.Integer(attribute="run_index")
    status = fields.String()
    start = fields.Integer(attribute="start_ms", allow_none=True)
    end = fields.Integer(attribute="end_ms", allow_none=True)
    started_at = fields.AwareDateTime(allow_none=True)
    ended_at = fields.AwareDateTime(allow_none=True)
    start_derived = fields.Boolean()
    end_derived = fields.Boolean()


class ExecutionSummarySchema(Schema):
    execution_id = fields.String()
    account_alias = fields.String()
    job_id = fields.String()
    status = fields.String()
    run_count = fields.Integer()
    current_run = fields.Integer(attribute="run_index")
    failed_hosts = fields.List(fields.String())
    restart_count = fields.Integer()
    is_vpn_established = fields.Boolean(allow_none=True)
    first_seen_at = fields.AwareDateTime()
    last_seen_at = fields.AwareDateTime()
    last_event_at = fields.AwareDateTime(allow_none=True)
    first_failure_at = fields.AwareDateTime(allow_none=True)


class HostFailureSchema(Schema):
    run = fields.Integer(attribute="run_index")
    host = fields.String()
    failure_class = fields.String()
    message = fields.String(allow_none=True)
    stderr_tail = fields.String(allow_none=True)
    rc = fields.Integer(allow_none=True)
    changed = fields.Integer(allow_none=True)
    occurred_at = fields.AwareDateTime()


class DecisionSchema(Schema):
    id = fields.Integer()
    run = fields.Integer(attribute="run_index")
    origin = fields.String(metadata={"enum": ["policy", "manual", "release"]})
    action = fields.String(metadata={"enum": ["restart", "skip", "held"]})
    hosts = fields.List(fields.String())
    excluded_hosts = fields.List(fields.Dict())
    due_at = fields.AwareDateTime(allow_none=True)
    backoff_seconds = fields.Float(allow_none=True)
    rule = fields.String()
    reason_code = fields.String()
    reason = fields.String()
    policy_version = fields.String()
    actor = fields.String(allow_none=True)
    created_at = fields.AwareDateTime()
    signature = fields.String(allow_none=True)
    deferred_by = fields.String(allow_none=True)
    held_until = fields.AwareDateTime(allow_none=True)


class AttemptSchema(Schema):
    worker = fields.String()
    started_at = fields.AwareDateTime()
    finished_at = fields.AwareDateTime(allow_none=True)
    status_code = fields.Integer(allow_none=True)
    outcome = fields.String()
    detail = fields.String(allow_none=True)


class RestartSchema(Schema):
    id = fields.Integer()
    decision_id = fields.Integer()
    run = fields.Integer(attribute="run_index")
    manual = fields.Boolean()
    state = fields.String(metadata={"enum": [state.value for state in RestartState]})
    hosts = fields.List(fields.String())
    due_at = fields.AwareDateTime()
    attempts = fields.Integer()
    outcome = fields.String(allow_none=True)
    outcome_detail = fields.String(allow_none=True)
    result = fields.String(allow_none=True, metadata={"enum": ["succeeded", "failed_again", None]})
    sent_at = fields.AwareDateTime(allow_none=True)
    completed_at = fields.AwareDateTime(allow_none=True)
    cancelled_by = fields.String(allow_none=True)
    hold_signature = fields.String(allow_none=True)


class EventSchema(Schema):
    id = fields.Integer()
    run = fields.Integer(attribute="run_index")
    kind = fields.String(metadata={"enum": ["event", "document"]})
    event_type = fields.String(allow_none=True)
    event_id = fields.String(allow_none=True)
    host = fields.String(allow_none=True)
    status = fields.String(allow_none=True)
    timestamp = fields.Integer(attribute="event_ms", allow_none=True)
    event_at = fields.AwareDateTime(allow_none=True)
    received_at = fields.AwareDateTime()
    payload = fields.Raw()


class SignatureSchema(Schema):
    key = fields.String()
    failure_class = fields.String()
    text = fields.String()
    open = fields.Boolean()
    until = fields.Method(
        "_until", allow_none=True, metadata={"type": "string", "format": "date-time"}
    )
    executions = fields.Integer(
        metadata={"description": "distinct executions failing with it in the last lookback_s"}
    )
    jobs = fields.List(fields.String(), metadata={"description": "their jobs"})
    lookback_s = fields.Method(
        "_lookback",
        metadata={
            "type": "integer",
            "description": "seconds back executions and jobs count: the breaker's window "
            "plus cool_down (the default breaker's when the policy has none)",
        },
    )
    held = fields.Integer()
    last_seen_at = fields.AwareDateTime()
    closed_by = fields.String(allow_none=True)

    def _lookback(self, view: Any) -> int:
        return int(view.lookback.total_seconds())

    def _until(self, view: Any) -> str | None:
        state = view.state
        return state.until.isoformat() if state is not None and state.until else None


class ExecutionPageSchema(Schema):
    items = fields.List(fields.Nested(ExecutionSummarySchema))
    next_cursor = NEXT_CURSOR


class RestartDetailSchema(RestartSchema):
    attempt_log = fields.List(fields.Nested(AttemptSchema))


class LeftFailedSchema(Schema):
    host = fields.String()
    run = fields.Integer(attribute="run_index", metadata={"description": "its last failed run"})
    failure_class = fields.String()
    message = fields.String(allow_none=True)
    reason = fields.String(metadata={"description": "why the restart after it left it out"})


class ExecutionDetailSchema(ExecutionSummarySchema):
    job_description = fields.String(allow_none=True)
    repository_log = fields.Raw(allow_none=True, metadata={"description": "as the Runner sent it"})
    timers = fields.List(fields.Nested(RunSchema), metadata={"description": "one per run"})
    host_failures = fields.List(fields.Nested(HostFailureSchema))
    left_failed_hosts = fields.List(
        fields.Nested(LeftFailedSchema),
        metadata={
            "description": "hosts that failed in an earlier run and that no restart since "
            "included: still failed, even when the newest run succeeded"
        },
    )
    decisions = fields.List(fields.Nested(DecisionSchema))
    restarts = fields.List(fields.Nested(RestartDetailSchema))


class EventPageSchema(Schema):
    items = fields.List(fields.Nested(EventSchema))
    next_cursor = NEXT_CURSOR


class QueuedRestartSchema(Schema):
    decision = fields.Nested(DecisionSchema)
    restart = fields.Nested(RestartSchema)


class PauseSchema(Schema):
    scope = fields.Function(
        lambda pause: "job" if pause.job_id else "global",
        metadata={"type": "string", "enum": ["global", "job"]},
    )
    job_id = fields.Function(
        lambda pause: pause.job_id or None,
        allow_none=True,
        metadata={"type": "string", "maxLength": MAX_ID_LENGTH},
    )
    paused_by = fields.String()
    reason = fields.String(allow_none=True)
    paused_at = fields.AwareDateTime()


class PauseListSchema(Schema):
    items = fields.List(fields.Nested(PauseSchema))


class PauseStateSchema(Schema):
    paused = fields.Boolean()
    scope = fields.String(metadata={"description": "`global`, or the job id"})


class SignatureListSchema(Schema):
    items = fields.List(fields.Nested(SignatureSchema))


class ClosedSignatureSchema(SignatureSchema):
    released = fields.Integer(metadata={"description": "held restarts let go now"})
    dropped = fields.Integer(metadata={"description": "held restarts no longer wanted"})
