"""The Runner's payload shapes: execution documents and status events.

Both the receiver and the Runner client read these shapes, so they are parsed here, once,
with the published quirks tolerated (see docs/runner.md): `timers` or a top-level
`start`/`end`, `failed_hosts` holding any scalar, lowercase statuses, `repository_log` as a
string or an object, unknown extra fields kept.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from marshmallow import INCLUDE, Schema, ValidationError, fields, missing, validate

STATUSES = (
    "PENDING",
    "INITIALIZING",
    "RUNNING",
    "SUCCESS",
    "FAILURE",
    "INIT_FAILURE",
    "STOPPING",
    "STOPPED",
    "KILLING",
    "KILLED",
    # Not in the published list; the Runner's UI code knows it: a run stopped by the job's
    # executionTtl (docs/runner.md).
    "EXPIRED",
)
FAILED_STATUSES = frozenset({"FAILURE", "INIT_FAILURE"})
FINAL_STATUSES = frozenset({"SUCCESS", "FAILURE", "INIT_FAILURE", "STOPPED", "KILLED", "EXPIRED"})

# Where a status sits within one run; a later run always outranks an earlier one.
STATUS_RANK = {
    "PENDING": 0,
    "INITIALIZING": 1,
    "RUNNING": 2,
    "STOPPING": 3,
    "KILLING": 3,
    "SUCCESS": 4,
    "FAILURE": 4,
    "INIT_FAILURE": 4,
    "STOPPED": 4,
    "KILLED": 4,
    "EXPIRED": 4,
}
UNKNOWN_RANK = 3
"""A status respawn does not know (one the Runner added later): after a running one, before
a final one. It is stored as given, shown as unknown, and never taken for a failure."""
MAX_STATUS_LENGTH = 32


def status_rank(status: str) -> int:
    return STATUS_RANK.get(status, UNKNOWN_RANK)


def is_known_status(status: str | None) -> bool:
    return status in STATUS_RANK


MAX_ID_LENGTH = 128
MAX_HOSTS = 10_000
# Epoch milliseconds between 1970 and 9999, so a datetime can always be built from it.
MAX_EPOCH_MS = 253_402_300_799_999
# In an id: path separators and every control character (C0, DEL, C1).
_UNSAFE_ID = re.compile(r"[/\\\x00-\x1f\x7f-\x9f]")
# Below this an epoch time is in seconds: 10^11 ms is 1973, 10^11 s is the year 5138.
SECONDS_BELOW = 100_000_000_000


class DocumentError(ValueError):
    """A payload of the wrong shape; `fields` maps each field to its messages."""

    def __init__(self, fields: Mapping[str, Any]) -> None:
        super().__init__("payload has the wrong shape")
        self.fields = dict(fields)


@dataclass(frozen=True)
class Timer:
    start_ms: int | None
    end_ms: int | None


@dataclass(frozen=True)
class ExecutionDocument:
    execution_id: str
    job_id: str | None
    account_alias: str | None
    status: str | None
    timers: tuple[Timer, ...]
    failed_hosts: tuple[str, ...]
    repository_log: Any
    is_vpn_established: bool | None
    record_id: str | None
    extra: dict[str, Any] = field(default_factory=dict)
    has_failed_hosts: bool = True


@dataclass(frozen=True)
class StatusEvent:
    event_id: str | None
    execution_id: str
    job_id: str | None
    account_alias: str | None
    event_type: str
    timestamp_ms: int | None
    message: Any
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def host(self) -> str | None:
        if isinstance(self.message, Mapping):
            host = self.message.get("host")
            if isinstance(host, str | int) and not isinstance(host, bool):
                return str(host)[:255]
        return None


class _EpochMillis(fields.Field[int]):
    """An epoch time as milliseconds: an integer, or a float or numeric string holding one.

    Timers are published in milliseconds; the unit of a status event's `timestamp` is not
    published, so seconds are accepted too, told apart by magnitude (`SECONDS_BELOW`).
    """

    default_error_messages = {"invalid": "Not a valid epoch time in milliseconds or seconds."}
    json_schema: ClassVar[dict[str, Any]] = {
        "type": ["integer", "number", "string"],
        "minimum": 0,
        "maximum": MAX_EPOCH_MS,
        "description": "epoch milliseconds (seconds below 10^11), a number or numeric text",
    }

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> int:
        if isinstance(value, bool):
            raise self.make_error("invalid")
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError as exc:
                raise self.make_error("invalid") from exc
        if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
            raise self.make_error("invalid")
        number = round(value * 1000) if 0 < value < SECONDS_BELOW else int(value)
        if number > MAX_EPOCH_MS:
            raise self.make_error("invalid")
        return number


class _Identifier(fields.Field[str]):
    """An id: a non-empty string (a number is accepted and kept as its text).

    Ids go into Runner URL paths and admin links, so one that could step out of its path
    segment (`.`, `..`, a `/` or `\\`) or forge a log line (a control character) is refused.
    """

    default_error_messages = {
        "invalid": "Not a valid identifier.",
        "unsafe": "Not a valid identifier: no '/', '\\', control characters, '.' or '..'.",
    }
    json_schema: ClassVar[dict[str, Any]] = {
        "type": ["string", "integer"],
        "minLength": 1,
        "maxLength": MAX_ID_LENGTH,
        "pattern": r"^[^/\\\x00-\x1f\x7f-\x9f]*$",
        "not": {"enum": [".", ".."]},
    }

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise self.make_error("invalid")
        text = str(value).strip()
        if not text or len(text) > MAX_ID_LENGTH:
            raise self.make_error("invalid")
        if text in {".", ".."} or _UNSAFE_ID.search(text):
            raise self.make_error("unsafe")
        return text


class _Status(fields.Field[str]):
    """A status, compared case-insensitively; one respawn does not know is kept as given
    (upper-cased, at most `MAX_STATUS_LENGTH` characters): a callback is never refused for
    its status value, since the Runner never sends it again."""

    default_error_messages = {"invalid": "Not an execution status."}
    json_schema: ClassVar[dict[str, Any]] = {
        "type": ["string", "integer"],
        "description": "case-insensitive: " + ", ".join(STATUSES) + "; another is kept as given",
    }

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise self.make_error("invalid")
        text = "".join(c for c in str(value).strip().upper() if c.isprintable())
        if not text:
            raise self.make_error("invalid")
        return text[:MAX_STATUS_LENGTH]


class _HostList(fields.Field[list[str]]):
    """`failed_hosts`: a list of scalars; the number 0 is the published examples'
    placeholder, not a host."""

    default_error_messages = {"invalid": "Not a list of host ids."}
    json_schema: ClassVar[dict[str, Any]] = {
        "type": "array",
        "maxItems": MAX_HOSTS,
        "items": {"type": ["string", "number", "object"]},
        "description": "host ids (or objects with an `id`); `[0]` means none",
    }

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> list[str]:
        if value is None:
            return []
        if not isinstance(value, list) or len(value) > MAX_HOSTS:
            raise self.make_error("invalid")
        hosts: dict[str, None] = {}  # ordered, and a membership test in constant time
        for item in value:
            if isinstance(item, Mapping) and "id" in item:
                item = item["id"]
            if isinstance(item, bool) or not isinstance(item, str | int | float):
                raise self.make_error("invalid")
            if isinstance(item, int | float) and item == 0:
                continue  # the published placeholder `[0]`: no host at all (docs/runner.md)
            host = str(item).strip()[:255]
            if host:
                hosts.setdefault(host)
        return list(hosts)


class TimerSchema(Schema):
    class Meta:
        unknown = INCLUDE

    start = _EpochMillis(allow_none=True, load_default=None)
    end = _EpochMillis(allow_none=True, load_default=None)


class ExecutionDocumentSchema(Schema):
    class Meta:
        unknown = INCLUDE

    execution_id = _Identifier(required=True)
    job_id = _Identifier(allow_none=True, load_default=None)
    account_alias = _Identifier(allow_none=True, load_default=None)
    status = _Status(allow_none=True, load_default=None)
    timers = fields.List(
        fields.Nested(TimerSchema),
        allow_none=True,
        load_default=None,
        validate=validate.Length(max=10_000),
    )
    start = _EpochMillis(allow_none=True, load_default=None)
    end = _EpochMillis(allow_none=True, load_default=None)
    failed_hosts = _HostList(allow_none=True, load_default=None)
    repository_log = fields.Raw(allow_none=True, load_default=None)
    is_vpn_established = fields.Boolean(allow_none=True, load_default=None)
    id = _Identifier(allow_none=True, load_default=None)


class StatusEventSchema(Schema):
    class Meta:
        unknown = INCLUDE

    id = _Identifier(allow_none=True, load_default=None)
    execution_id = _Identifier(required=True)
    job_id = _Identifier(allow_none=True, load_default=None)
    account_alias = _Identifier(allow_none=True, load_default=None)
    event_type = fields.String(required=True, validate=validate.Length(min=1, max=64))
    timestamp = _EpochMillis(allow_none=True, load_default=None)
    message = fields.Raw(allow_none=True, load_default=None)
    notifications = fields.Raw(allow_none=True, load_default=None)


# One instance each: a schema is reusable and building one is the costly part.
_DOCUMENT_SCHEMA = ExecutionDocumentSchema()
_EVENT_SCHEMA = StatusEventSchema()
_DOCUMENT_FIELDS = frozenset(_DOCUMENT_SCHEMA.fields)
_EVENT_FIELDS = frozenset(_EVENT_SCHEMA.fields)


def _load(schema: Schema, data: Any) -> dict[str, Any]:
    """The schema's reading of `data`'s declared fields (DocumentError with every field's
    messages if any is refused)."""
    if not isinstance(data, Mapping):
        raise DocumentError({"_schema": ["Expected a JSON object."]})
    loaded = _read_fields(schema, data)
    if loaded is not None:
        return loaded
    try:
        loaded = schema.load(data)
    except ValidationError as exc:
        messages = exc.messages if isinstance(exc.messages, dict) else {"_schema": exc.messages}
        raise DocumentError(messages) from None
    return dict(loaded)


def _read_fields(schema: Schema, data: Mapping[str, Any]) -> dict[str, Any] | None:
    """`schema.load(data)` for the declared fields, read as the schema reads them (each
    field's own `deserialize`, a missing one as `missing`), without the schema's bookkeeping
    of errors: None at the first field that refuses, for `schema.load` to name every
    refusal. These schemas have no hooks or schema-level validators (a test holds them to
    it), and the callers read unknown fields from `data` itself. A status event, which the
    receiver reads for every one, is parsed in about two thirds of the CPU (21 against
    30 us, docs/BENCHMARKS.md)."""
    loaded: dict[str, Any] = {}
    try:
        for name, field in schema.load_fields.items():
            key = field.data_key if field.data_key is not None else name
            value = field.deserialize(data.get(key, missing), key, data)
            if value is not missing:
                loaded[field.attribute or name] = value
    except ValidationError:
        return None
    return loaded


def is_status_event(data: Any) -> bool:
    return isinstance(data, Mapping) and "event_type" in data


def parse_execution_document(data: Mapping[str, Any]) -> ExecutionDocument:
    loaded = _load(_DOCUMENT_SCHEMA, data)
    if loaded["timers"] is not None:
        timers = tuple(Timer(t["start"], t["end"]) for t in loaded["timers"])
    elif loaded["start"] is not None or loaded["end"] is not None:
        timers = (Timer(loaded["start"], loaded["end"]),)
    else:
        timers = ()
    extra = {k: v for k, v in data.items() if k not in _DOCUMENT_FIELDS}
    return ExecutionDocument(
        execution_id=loaded["execution_id"],
        job_id=loaded["job_id"],
        account_alias=loaded["account_alias"],
        status=loaded["status"],
        timers=timers,
        failed_hosts=tuple(loaded["failed_hosts"] or ()),
        repository_log=loaded["repository_log"],
        is_vpn_established=loaded["is_vpn_established"],
        record_id=loaded["id"],
        extra=extra,
        has_failed_hosts="failed_hosts" in data,
    )


def parse_status_event(data: Mapping[str, Any]) -> StatusEvent:
    loaded = _load(_EVENT_SCHEMA, data)
    extra = {k: v for k, v in data.items() if k not in _EVENT_FIELDS}
    return StatusEvent(
        event_id=loaded["id"],
        execution_id=loaded["execution_id"],
        job_id=loaded["job_id"],
        account_alias=loaded["account_alias"],
        event_type=loaded["event_type"].strip().lower(),
        timestamp_ms=loaded["timestamp"],
        message=loaded["message"],
        extra=extra,
    )
