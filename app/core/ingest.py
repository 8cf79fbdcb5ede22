"""Recording the Runner's feed: deduplicate, store, and move each execution forward only.

A delivery is a status event or an execution document (docs/runner.md). Each is stored once
(by its delivery key), assigned to a run of its execution, and applied to that execution's
state only when it is newer than what is already known: a later run always wins; within a
run, a status of higher rank wins (PENDING < INITIALIZING < RUNNING < STOPPING < final).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.core.decisions import DecideResult, decide_failed_runs
from app.core.errors import Invalid
from app.db import locked
from app.models import Event, Execution, ExecutionRun, HostFailure, Restart
from app.policy import Policy
from app.redact import redact, redact_text
from app.runner.documents import (
    FAILED_STATUSES,
    STATUS_RANK,
    DocumentError,
    ExecutionDocument,
    StatusEvent,
    is_status_event,
    parse_execution_document,
    parse_status_event,
)

FINAL_RANK = 4
FAILURE_EVENTS = {
    "runner_on_failed": "task_failed",
    "runner_on_unreachable": "unreachable",
    "runner_on_async_failed": "async_failed",
}
MAX_MESSAGE_CHARS = 2000
MAX_STDERR_CHARS = 2000


@dataclass(frozen=True)
class Delivery:
    """One parsed item of a callback body, with its deduplication keys."""

    item: ExecutionDocument | StatusEvent
    payload: Any  # redacted, as stored
    delivery_key: str
    webhook_key: str | None


@dataclass
class IngestResult:
    accepted: int = 0
    duplicates: int = 0
    executions: dict[str, Execution] = field(default_factory=dict)


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
            if is_status_event(raw):
                item: ExecutionDocument | StatusEvent = parse_status_event(raw)
            else:
                item = parse_execution_document(raw)
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


def _ms_to_datetime(ms: int | None) -> dt.datetime | None:
    if ms is None:
        return None
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC)


class _ExecutionState:
    """An execution and its runs, loaded once per delivery batch."""

    def __init__(self, execution: Execution, runs: Iterable[ExecutionRun]) -> None:
        self.execution = execution
        self.runs: dict[int, ExecutionRun] = {run.run_index: run for run in runs}

    def run(self, session: Session, index: int) -> ExecutionRun:
        run = self.runs.get(index)
        if run is None:
            run = ExecutionRun(
                execution_pk=self.execution.id,
                run_index=index,
                status="PENDING",
                start_derived=False,
                end_derived=False,
            )
            session.add(run)
            self.runs[index] = run
        return run


def _load_state(session: Session, execution_id: str, now: dt.datetime) -> _ExecutionState:
    query = (
        select(Execution)
        .where(Execution.execution_id == execution_id)
        .execution_options(populate_existing=True)
    )
    execution = session.scalars(locked(session, query)).one_or_none()
    if execution is None:
        execution = Execution(
            execution_id=execution_id,
            account_alias="",
            job_id="",
            status="PENDING",
            run_index=0,
            status_rank=-1,
            run_count=1,
            failed_hosts=[],
            first_seen_at=now,
            last_seen_at=now,
            restart_count=0,
        )
        session.add(execution)
        session.flush()
        return _ExecutionState(execution, [])
    runs = session.scalars(select(ExecutionRun).where(ExecutionRun.execution_pk == execution.id))
    return _ExecutionState(execution, runs)


def _set_status(
    session: Session, state: _ExecutionState, run_index: int, status: str, at: dt.datetime
) -> None:
    """Apply a status at a run if it is ahead of the current position; never move back."""
    execution = state.execution
    rank = STATUS_RANK[status]
    run = state.run(session, run_index)
    if run_index > execution.run_index or (
        run_index == execution.run_index and rank > execution.status_rank
    ):
        if run_index > execution.run_index:
            execution.failed_hosts = []
        execution.run_index = run_index
        execution.status = status
        execution.status_rank = rank
        if status in FAILED_STATUSES and execution.first_failure_at is None:
            execution.first_failure_at = min(at, dt.datetime.now(dt.UTC))
        if rank == FINAL_RANK and run_index > 0:
            _record_restart_result(session, execution, run_index, status, at)
    if rank > STATUS_RANK.get(run.status, 0):
        run.status = status
    execution.run_count = max(execution.run_count, run_index + 1)


def _record_restart_result(
    session: Session, execution: Execution, run_index: int, status: str, at: dt.datetime
) -> None:
    """The run a restart started has ended: remember whether it failed again (the breaker)."""
    session.execute(
        update(Restart)
        .where(
            Restart.execution_pk == execution.id,
            Restart.run_index == run_index - 1,
            Restart.state == "done",
            Restart.result.is_(None),
        )
        .values(result="failed_again" if status in FAILED_STATUSES else "succeeded", result_at=at)
    )


def _note_failed_host(
    session: Session,
    state: _ExecutionState,
    run_index: int,
    host: str,
    failure_class: str,
    at: dt.datetime,
    details: Mapping[str, Any] | None = None,
) -> None:
    existing = session.scalars(
        select(HostFailure).where(
            HostFailure.execution_pk == state.execution.id,
            HostFailure.run_index == run_index,
            HostFailure.host == host,
        )
    ).one_or_none()
    if existing is None:
        existing = HostFailure(
            execution_pk=state.execution.id,
            run_index=run_index,
            host=host,
            failure_class=failure_class,
            occurred_at=at,
        )
        session.add(existing)
    elif existing.failure_class == "unknown":
        existing.failure_class = failure_class
    if details:
        message, stderr, rc, changed = _failure_details(details)
        existing.message = message or existing.message
        existing.stderr_tail = stderr or existing.stderr_tail
        existing.rc = rc if rc is not None else existing.rc
        existing.changed = changed if changed is not None else existing.changed
    if run_index == state.execution.run_index and host not in state.execution.failed_hosts:
        state.execution.failed_hosts = [*state.execution.failed_hosts, host]


def _failure_details(
    message: Mapping[str, Any],
) -> tuple[str | None, str | None, int | None, int | None]:
    """msg, the tail of stderr, rc and changed, as real Ansible reports a failed task."""
    text = message.get("msg")
    msg = redact_text(str(text))[:MAX_MESSAGE_CHARS] if text not in (None, "") else None
    stderr_raw = message.get("stderr")
    stderr = (
        redact_text(str(stderr_raw))[-MAX_STDERR_CHARS:] if stderr_raw not in (None, "") else None
    )
    rc = message.get("rc")
    rc = rc if isinstance(rc, int) and not isinstance(rc, bool) else None
    changed_raw = message.get("changed")
    changed: int | None
    if isinstance(changed_raw, bool):
        changed = int(changed_raw)
    elif isinstance(changed_raw, int):
        changed = changed_raw
    else:
        changed = None
    return msg, stderr, rc, changed


def _apply_document(
    session: Session, state: _ExecutionState, doc: ExecutionDocument, now: dt.datetime
) -> int:
    execution = state.execution
    count = len(doc.timers)
    if doc.status in {"PENDING", "INITIALIZING"} and (
        count == 0 or doc.timers[-1].end_ms is not None
    ):
        run_index = count  # a restart answers PENDING with only the earlier timers
    else:
        run_index = max(count - 1, 0)
    for index, timer in enumerate(doc.timers):
        run = state.run(session, index)
        if timer.start_ms is not None:
            run.start_ms, run.started_at = timer.start_ms, _ms_to_datetime(timer.start_ms)
            run.start_derived = False
        if timer.end_ms is not None:
            run.end_ms, run.ended_at = timer.end_ms, _ms_to_datetime(timer.end_ms)
            run.end_derived = False
        if index < run_index and timer.end_ms is not None and STATUS_RANK[run.status] < FINAL_RANK:
            run.status = "FAILURE"  # only a failed run is restarted, so an earlier run failed
    if doc.repository_log is not None:
        execution.repository_log = redact(doc.repository_log)
    if doc.is_vpn_established is not None:
        execution.is_vpn_established = doc.is_vpn_established
    execution.run_count = max(execution.run_count, count, run_index + 1)
    if doc.status is not None:
        # A document fetched late (the reconciler) dates its failure by the run's end.
        ended = doc.timers[run_index].end_ms if run_index < count else None
        _set_status(session, state, run_index, doc.status, _ms_to_datetime(ended) or now)
    if doc.status in FAILED_STATUSES:
        failure_class = "init_failure" if doc.status == "INIT_FAILURE" else "unknown"
        for host in doc.failed_hosts:
            _note_failed_host(session, state, run_index, host, failure_class, now)
    elif doc.status in {"PENDING", "INITIALIZING"} and run_index > 0:
        # A restart's answer lists the hosts of the run it restarts.
        for host in doc.failed_hosts:
            _note_failed_host(session, state, run_index - 1, host, "unknown", now)
    return run_index


# Events that close a run: they come last, at or just after the run's end.
CLOSING_EVENTS = frozenset({"playbook_on_stats", "playbook_result"})
# How long after a run's recorded end its own closing events may still be stamped.
CLOSING_GRACE_MS = 10_000


def _run_for_event(session: Session, state: _ExecutionState, event: StatusEvent) -> int:
    """Which run an event belongs to; events carry no run number (docs/runner.md).

    An event belongs to the latest run that had started by its timestamp. Once that run has
    ended, a later `playbook_on_start` or any later event opens the next run, except the
    run's own closing events (`playbook_on_stats`, `playbook_result`), which may be stamped
    just after the end an execution document gave, and arrive after a restart was sent.
    """
    execution = state.execution
    current = execution.run_index
    ts = event.timestamp_ms
    if ts is None:
        ended = execution.status_rank >= FINAL_RANK
        return current + 1 if ended and event.event_type == "playbook_on_start" else current
    index = current
    while index > 0:
        run = state.runs.get(index)
        previous = state.runs.get(index - 1)
        start = run.start_ms if run is not None else None
        previous_end = previous.end_ms if previous is not None else None
        if start is not None and ts >= start:
            break
        if previous_end is None or (ts > previous_end and not _closes(event, previous_end, ts)):
            break
        if _closes(event, previous_end, ts) and _has_result(session, execution, index - 1):
            break
        index -= 1
    run = state.runs.get(index)
    if run is None or run.end_ms is None or ts <= run.end_ms:
        return index
    if index < current:
        return index  # walked back on purpose: a closing event of an earlier run
    ended = STATUS_RANK.get(run.status, 0) >= FINAL_RANK or execution.status_rank >= FINAL_RANK
    if not ended:
        return index
    if _closes(event, run.end_ms, ts) and not _has_result(session, execution, index):
        return index
    return index + 1


def _closes(event: StatusEvent, end_ms: int, ts: int) -> bool:
    return event.event_type in CLOSING_EVENTS and ts <= end_ms + CLOSING_GRACE_MS


def _has_result(session: Session, execution: Execution, run_index: int) -> bool:
    """Whether the run's own `playbook_result` was stored already."""
    found = session.scalar(
        select(Event.id)
        .where(
            Event.execution_pk == execution.id,
            Event.run_index == run_index,
            Event.event_type == "playbook_result",
        )
        .limit(1)
    )
    return found is not None


def _final_status(event: StatusEvent) -> str:
    message = event.message if isinstance(event.message, Mapping) else {}
    status = message.get("status")
    if isinstance(status, str) and status.strip().upper() in STATUS_RANK:
        upper = status.strip().upper()
        if STATUS_RANK[upper] == FINAL_RANK:
            return upper
    stats = message.get("stats")
    if isinstance(stats, Mapping):
        for counts in stats.values():
            if isinstance(counts, Mapping) and any(
                isinstance(counts.get(k), int) and counts.get(k)
                for k in ("failures", "unreachable")
            ):
                return "FAILURE"
        return "SUCCESS"
    return "FAILURE"


def _apply_event(
    session: Session, state: _ExecutionState, event: StatusEvent, now: dt.datetime
) -> int:
    execution = state.execution
    run_index = _run_for_event(session, state, event)
    run = state.run(session, run_index)
    ts = event.timestamp_ms
    at = _ms_to_datetime(ts) or now
    if ts is not None and (run.start_ms is None or (run.start_derived and ts < run.start_ms)):
        run.start_ms, run.started_at, run.start_derived = ts, _ms_to_datetime(ts), True
    if ts is not None and (execution.last_event_at is None or at > execution.last_event_at):
        execution.last_event_at = at

    message = event.message if isinstance(event.message, Mapping) else {}
    if event.event_type == "playbook_result":
        status = _final_status(event)
        if ts is not None and (run.end_ms is None or run.end_derived):
            run.end_ms, run.ended_at, run.end_derived = ts, at, True
        _set_status(session, state, run_index, status, at)
        stats = message.get("stats")
        if isinstance(stats, Mapping):
            for host, counts in stats.items():
                if not isinstance(counts, Mapping):
                    continue
                if _positive(counts.get("unreachable")):
                    _note_failed_host(session, state, run_index, str(host)[:255], "unreachable", at)
                elif _positive(counts.get("failures")):
                    _note_failed_host(session, state, run_index, str(host)[:255], "task_failed", at)
        if status == "INIT_FAILURE":
            return run_index
    elif event.event_type in FAILURE_EVENTS:
        _set_status(session, state, run_index, "RUNNING", at)
        host = event.host
        if host is not None and message.get("ignore_errors") is not True:
            _note_failed_host(
                session, state, run_index, host, FAILURE_EVENTS[event.event_type], at, message
            )
    else:
        _set_status(session, state, run_index, "RUNNING", at)
    return run_index


def _positive(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def record_deliveries(
    session: Session, deliveries: Sequence[Delivery], now: dt.datetime
) -> IngestResult:
    """Store each new delivery and apply it to its execution; flush, never commit."""
    result = IngestResult()
    keys = [d.delivery_key for d in deliveries]
    webhook_keys = [d.webhook_key for d in deliveries if d.webhook_key]
    seen = set(session.scalars(select(Event.delivery_key).where(Event.delivery_key.in_(keys))))
    if webhook_keys:
        seen.update(
            session.scalars(select(Event.webhook_key).where(Event.webhook_key.in_(webhook_keys)))
        )
    states: dict[str, _ExecutionState] = {}
    for delivery in deliveries:
        if delivery.delivery_key in seen or (delivery.webhook_key or "") in seen:
            result.duplicates += 1
            continue
        seen.add(delivery.delivery_key)
        if delivery.webhook_key:
            seen.add(delivery.webhook_key)
        item = delivery.item
        state = states.get(item.execution_id)
        if state is None:
            state = states[item.execution_id] = _load_state(session, item.execution_id, now)
        execution = state.execution
        if item.account_alias and not execution.account_alias:
            execution.account_alias = item.account_alias
        if item.job_id and not execution.job_id:
            execution.job_id = item.job_id
        execution.last_seen_at = now
        if isinstance(item, StatusEvent):
            run_index = _apply_event(session, state, item, now)
            event = Event(
                kind="event",
                event_type=item.event_type,
                event_id=item.event_id,
                host=item.host,
                event_ms=item.timestamp_ms,
                event_at=_ms_to_datetime(item.timestamp_ms),
            )
        else:
            run_index = _apply_document(session, state, item, now)
            event = Event(kind="document", status=item.status, event_id=item.record_id)
        event.execution_pk = execution.id
        event.run_index = run_index
        event.delivery_key = delivery.delivery_key
        event.webhook_key = delivery.webhook_key
        event.received_at = now
        event.payload = delivery.payload
        session.add(event)
        result.accepted += 1
        result.executions[execution.execution_id] = execution
    session.flush()
    return result


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


def record_documents(
    session: Session, documents: Sequence[ExecutionDocument], now: dt.datetime
) -> IngestResult:
    """Record execution documents respawn fetched itself; flush, never commit."""
    return record_deliveries(session, document_deliveries(documents), now)


@dataclass(frozen=True)
class Ingested:
    stored: IngestResult
    decided: DecideResult


def ingest_and_decide(
    session: Session,
    deliveries: Sequence[Delivery],
    now: dt.datetime,
    policy: Policy,
    defer_unknown_jobs: bool,
) -> Ingested:
    """Store deliveries and decide every run they made failed, in the caller's transaction.

    The receiver and the reconciler both come through here, so a failure is decided the same
    way whichever path reported it. With `defer_unknown_jobs`, a failure of a job respawn has
    not fetched yet waits for the job's record when the policy matches job globs.
    """
    stored = record_deliveries(session, deliveries, now)
    decided = decide_failed_runs(
        session, stored.executions.values(), now, policy, defer_unknown_jobs=defer_unknown_jobs
    )
    return Ingested(stored, decided)


def advance_to_run(
    session: Session, execution: Execution, run_index: int, status: str, now: dt.datetime
) -> None:
    """Move an execution forward to a run (a restart respawn saw accepted)."""
    runs = session.scalars(select(ExecutionRun).where(ExecutionRun.execution_pk == execution.id))
    _set_status(session, _ExecutionState(execution, runs), run_index, status, now)
