"""What a callback body holds: deliveries, validated, redacted and keyed for deduplication.

A delivery is a status event or an execution document (docs/runner.md). Each gets a delivery
key from what it says (a status event's id, or a document's content), and a webhook key when
the sender named the message (`webhook-id`); either one seen before makes it a duplicate.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from app.core.errors import Invalid
from app.redact import redact
from app.runner.documents import (
    DocumentError,
    ExecutionDocument,
    StatusEvent,
    is_status_event,
    parse_execution_document,
    parse_status_event,
)


@dataclass(frozen=True)
class Delivery:
    """One parsed item of a callback body, with its deduplication keys."""

    item: ExecutionDocument | StatusEvent
    payload: Any  # redacted, as stored
    delivery_key: str
    webhook_key: str | None

    @property
    def execution_id(self) -> str:
        return self.item.execution_id

    def row(self, now: dt.datetime) -> dict[str, Any]:
        """The `events` row that stores it, pending in the inbox."""
        item = self.item
        row: dict[str, Any] = {
            "execution_id": item.execution_id,
            "pending": True,
            "attempts": 0,
            "delivery_key": self.delivery_key,
            "webhook_key": self.webhook_key,
            "received_at": now,
            "payload": self.payload,
        }
        if isinstance(item, StatusEvent):
            row.update(
                kind="event",
                event_type=item.event_type,
                event_id=item.event_id,
                host=item.host,
                status=None,
                event_ms=item.timestamp_ms,
                event_at=ms_to_datetime(item.timestamp_ms),
            )
        else:
            row.update(
                kind="document",
                event_type=None,
                event_id=item.record_id,
                host=None,
                status=item.status,
                event_ms=None,
                event_at=None,
            )
        return row


def ms_to_datetime(ms: int | None) -> dt.datetime | None:
    if ms is None:
        return None
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC)


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def delivery_key(item: ExecutionDocument | StatusEvent, raw: Any) -> str:
    """A status event is known by its id; a document by what it says (not its record id)."""
    if isinstance(item, StatusEvent):
        if item.event_id is not None:
            return _digest("event", item.execution_id, item.event_id)
        return _digest("event-body", item.execution_id, _canonical(raw))
    timers = [[t.start_ms, t.end_ms] for t in item.timers]
    return _digest(
        "document",
        item.execution_id,
        item.status or "",
        _canonical(timers),
        _canonical(sorted(item.failed_hosts)),
    )


def parse_item(raw: Any) -> ExecutionDocument | StatusEvent:
    """A status event or an execution document (DocumentError if it is neither)."""
    if is_status_event(raw):
        return parse_status_event(raw)
    return parse_execution_document(raw)


def parse_deliveries(body: Any, webhook_id: str | None, max_items: int) -> list[Delivery]:
    """Validate a whole body; any bad item rejects all of it (422 with per-item fields)."""
    items = body if isinstance(body, list) else [body]
    if isinstance(body, list) and not body:
        raise Invalid("empty array: nothing to record", fields={"_schema": ["Empty array."]})
    if len(items) > max_items:
        raise Invalid(
            f"too many items in one delivery ({len(items)} > {max_items})",
            fields={"_schema": [f"At most {max_items} items per delivery."]},
        )
    deliveries: list[Delivery] = []
    problems: dict[str, Any] = {}
    for index, raw in enumerate(items):
        try:
            item = parse_item(raw)
        except DocumentError as exc:
            problems[str(index) if isinstance(body, list) else "_item"] = exc.fields
            continue
        webhook_key = None
        if webhook_id:
            webhook_key = _digest("webhook", webhook_id, str(index))
        deliveries.append(Delivery(item, redact(raw), delivery_key(item, raw), webhook_key))
    if problems:
        fields = problems.get("_item", problems) if not isinstance(body, list) else problems
        raise Invalid(
            "the payload does not have the shape of a status event or execution", fields=fields
        )
    return deliveries


def document_payload(document: ExecutionDocument) -> dict[str, Any]:
    """An execution document as the Runner would have sent it (for documents we fetched)."""
    payload: dict[str, Any] = dict(document.extra)
    payload.update(
        execution_id=document.execution_id,
        job_id=document.job_id,
        account_alias=document.account_alias,
        status=document.status,
        timers=[{"start": t.start_ms, "end": t.end_ms} for t in document.timers],
        failed_hosts=list(document.failed_hosts),
        repository_log=document.repository_log,
        is_vpn_established=document.is_vpn_established,
    )
    if document.record_id is not None:
        payload["id"] = document.record_id
    return payload


def document_deliveries(documents: Sequence[ExecutionDocument]) -> list[Delivery]:
    """Execution documents respawn fetched itself (restart answers, the reconciler), as
    deliveries: redacted like anything the Runner sends."""
    deliveries = []
    for document in documents:
        payload = document_payload(document)
        deliveries.append(
            Delivery(document, redact(payload), delivery_key(document, payload), None)
        )
    return deliveries


def parse_fetched(items: Sequence[Any]) -> tuple[list[Delivery], int]:
    """Items respawn fetched itself (the status API): each one that reads is a delivery, the
    others are counted and left out (one bad record must not hide the rest)."""
    deliveries: list[Delivery] = []
    skipped = 0
    for raw in items:
        try:
            item = parse_item(raw)
        except DocumentError:
            skipped += 1
            continue
        deliveries.append(Delivery(item, redact(raw), delivery_key(item, raw), None))
    return deliveries, skipped
