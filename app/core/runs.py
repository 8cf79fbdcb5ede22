"""Applying deliveries to executions: which run each belongs to, and moving forward only.

A delivery is applied to its execution's state only when it is newer than what is already
known: a later run always wins; within a run, a status of higher rank wins (PENDING <
INITIALIZING < RUNNING < STOPPING < final). Failed hosts are recorded per run with what
Ansible said. An `ExecutionState` holds one execution, its runs and its recorded failures for
a batch, so a document naming 10,000 failed hosts costs one query, not one per host.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import Table, insert, select, update
from sqlalchemy.orm import Session

from app.core.deliveries import ms_to_datetime
from app.models import Event, Execution, ExecutionRun, HostFailure, Restart, RestartState
from app.redact import redact, redact_text
from app.runner.documents import (
    FAILED_STATUSES,
    STATUS_RANK,
    ExecutionDocument,
    StatusEvent,
    status_rank,
)

FINAL_RANK = 4
FAILURE_EVENTS = {
    "runner_on_failed": "task_failed",
    "runner_on_unreachable": "unreachable",
    "runner_on_async_failed": "async_failed",
}
_HOST_FAILURES: Table = HostFailure.__table__  # type: ignore[assignment]  # a model's Table
MAX_MESSAGE_CHARS = 2000
MAX_STDERR_CHARS = 2000


class ExecutionState:
    """An execution, its runs and its recorded failures, loaded once per batch."""

    def __init__(
        self, execution: Execution, runs: Iterable[ExecutionRun], new: bool = False
    ) -> None:
        """`new`: created by this transaction, so no failure of it is stored yet."""
        self.execution = execution
        self._new = new
        self.runs: dict[int, ExecutionRun] = {run.run_index: run for run in runs}
        self._failures: dict[int, dict[str, HostFailure]] = {}
        # The current run's failed hosts, kept as a set and written back once (`finish`).
        self._failed_hosts: dict[str, None] = dict.fromkeys(execution.failed_hosts or ())
        self._failed_run = execution.run_index
        self._failed_changed = False
        self.results: set[int] = set()
        """Runs whose `playbook_result` was applied in this batch."""
        self.settled: list[int] = []
        """Restarts whose run ended in this batch (their outcome is counted once it is done)."""
        self.added_failures = False
        """Whether a failure was added to the session (not flushed yet) for this execution."""

    @classmethod
    def load(cls, session: Session, execution: Execution) -> ExecutionState:
        """One execution's state, its runs read (the batch path reads many at once)."""
        runs = session.scalars(
            select(ExecutionRun).where(ExecutionRun.execution_pk == execution.id)
        )
        return cls(execution, runs)

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

    def failures(self, session: Session, run_index: int) -> dict[str, HostFailure]:
        """The recorded failures of one run by host (read once per batch)."""
        found = self._failures.get(run_index)
        if found is None and self._new:
            found = self._failures[run_index] = {}
        if found is None:
            query = select(HostFailure).where(
                HostFailure.execution_pk == self.execution.id,
                HostFailure.run_index == run_index,
            )
            if self.added_failures:
                rows = list(session.scalars(query))  # flushes them first: the read sees them
            else:
                # Nothing of this execution's failures waits to be flushed: the execution's
                # and its runs' changes stay pending, for one flush of each row, not two.
                with session.no_autoflush:
                    rows = list(session.scalars(query))
            found = self._failures[run_index] = {row.host: row for row in rows}
        return found

    def forget_failures(self, run_index: int) -> None:
        """Rows were written around the cache: the next `failures` reads them."""
        self._failures.pop(run_index, None)
        self._new = False

    def new_run(self, run_index: int) -> None:
        """The execution moved to a later run: its failed hosts start afresh."""
        self._failed_hosts = {}
        self._failed_run = run_index
        self._failed_changed = True

    def add_failed_host(self, run_index: int, host: str) -> None:
        if run_index == self._failed_run and host not in self._failed_hosts:
            self._failed_hosts[host] = None
            self._failed_changed = True

    def finish(self) -> None:
        """Write the batch's changes to the current run's failed hosts back (once)."""
        if self._failed_changed:
            self.execution.failed_hosts = list(self._failed_hosts)
            self._failed_changed = False


def set_status(
    session: Session, state: ExecutionState, run_index: int, status: str, at: dt.datetime
) -> None:
    """Apply a status at a run if it is ahead of the current position; never move back."""
    execution = state.execution
    rank = status_rank(status)
    run = state.run(session, run_index)
    if run_index > execution.run_index or (
        run_index == execution.run_index and rank > execution.status_rank
    ):
        if run_index > execution.run_index:
            state.new_run(run_index)
        execution.run_index = run_index
        execution.status = status
        execution.status_rank = rank
        if status in FAILED_STATUSES and execution.first_failure_at is None:
            execution.first_failure_at = min(at, dt.datetime.now(dt.UTC))
        if rank == FINAL_RANK and run_index > 0:
            state.settled += record_restart_result(session, execution, run_index, status, at)
    if rank > status_rank(run.status):
        run.status = status
    execution.run_count = max(execution.run_count, run_index + 1)


def record_restart_result(
    session: Session, execution: Execution, run_index: int, status: str, at: dt.datetime
) -> list[int]:
    """The run a restart started has ended: remember whether it failed again (the breaker).
    Returns the restarts whose result this recorded."""
    ids = list(
        session.scalars(
            select(Restart.id).where(
                Restart.execution_pk == execution.id,
                Restart.run_index == run_index - 1,
                Restart.state == RestartState.DONE,
                Restart.result.is_(None),
            )
        )
    )
    if ids:
        session.execute(
            update(Restart)
            .where(Restart.id.in_(ids))
            .values(
                result="failed_again" if status in FAILED_STATUSES else "succeeded", result_at=at
            )
        )
    return ids


def note_failed_host(
    session: Session,
    state: ExecutionState,
    run_index: int,
    host: str,
    failure_class: str,
    at: dt.datetime,
    details: Mapping[str, Any] | None = None,
) -> None:
    failures = state.failures(session, run_index)
    existing = failures.get(host)
    if existing is None:
        existing = HostFailure(
            execution_pk=state.execution.id,
            run_index=run_index,
            host=host,
            failure_class=failure_class,
            occurred_at=at,
        )
        session.add(existing)
        state.added_failures = True
        failures[host] = existing
    elif existing.failure_class == "unknown":
        existing.failure_class = failure_class
    if details:
        message, stderr, rc, changed = _failure_details(details)
        existing.message = message or existing.message
        existing.stderr_tail = stderr or existing.stderr_tail
        existing.rc = rc if rc is not None else existing.rc
        existing.changed = changed if changed is not None else existing.changed
    state.add_failed_host(run_index, host)


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


def document_run(doc: ExecutionDocument) -> int:
    """The run a document speaks of: its last timer's, or the next one when it is PENDING
    after ended timers (a restart answers PENDING with only the earlier timers)."""
    count = len(doc.timers)
    if doc.status in {"PENDING", "INITIALIZING"} and (
        count == 0 or doc.timers[-1].end_ms is not None
    ):
        return count
    return max(count - 1, 0)


def apply_document(
    session: Session, state: ExecutionState, doc: ExecutionDocument, now: dt.datetime
) -> int:
    execution = state.execution
    count = len(doc.timers)
    run_index = document_run(doc)
    for index, timer in enumerate(doc.timers):
        run = state.run(session, index)
        if timer.start_ms is not None:
            run.start_ms, run.started_at = timer.start_ms, ms_to_datetime(timer.start_ms)
            run.start_derived = False
        if timer.end_ms is not None:
            run.end_ms, run.ended_at = timer.end_ms, ms_to_datetime(timer.end_ms)
            run.end_derived = False
        if index < run_index and timer.end_ms is not None and status_rank(run.status) < FINAL_RANK:
            run.status = "FAILURE"  # only a failed run is restarted, so an earlier run failed
    if doc.repository_log is not None:
        execution.repository_log = redact(doc.repository_log)
    if doc.is_vpn_established is not None:
        execution.is_vpn_established = doc.is_vpn_established
    execution.run_count = max(execution.run_count, count, run_index + 1)
    if doc.status is not None:
        # A document fetched late (the reconciler) dates its failure by the run's end.
        ended = doc.timers[run_index].end_ms if run_index < count else None
        set_status(session, state, run_index, doc.status, ms_to_datetime(ended) or now)
    if doc.status in FAILED_STATUSES:
        failure_class = "init_failure" if doc.status == "INIT_FAILURE" else "unknown"
        note_failed_hosts(session, state, run_index, doc.failed_hosts, failure_class, now)
    elif doc.status in {"PENDING", "INITIALIZING"} and run_index > 0:
        # A restart's answer lists the hosts of the run it restarts.
        note_failed_hosts(session, state, run_index - 1, doc.failed_hosts, "unknown", now)
    return run_index


def note_failed_hosts(
    session: Session,
    state: ExecutionState,
    run_index: int,
    hosts: Iterable[str],
    failure_class: str,
    at: dt.datetime,
) -> None:
    """The failed hosts a document lists (no details): the new ones inserted in one
    statement rather than as one ORM object each (a document may name 10,000 hosts: 0.6 s of
    objects and their flush against 0.05 s), the known ones as `note_failed_host` does."""
    failures = state.failures(session, run_index)
    new: dict[str, None] = {}
    for host in hosts:
        if host in failures:
            note_failed_host(session, state, run_index, host, failure_class, at)
        elif host not in new:
            new[host] = None
    if not new:
        return
    rows = [
        {
            "execution_pk": state.execution.id,
            "run_index": run_index,
            "host": host,
            "failure_class": failure_class,
            "occurred_at": at,
        }
        for host in new
    ]
    # The rows need only the execution's row, which exists: what the ORM holds pending (the
    # execution's new values, its runs) is flushed later with the failed hosts' list, one
    # UPDATE of the execution rather than two.
    with session.no_autoflush:
        session.execute(insert(_HOST_FAILURES), rows)
    state.forget_failures(run_index)  # read again (with the new rows) if needed later
    for host in new:
        state.add_failed_host(run_index, host)


# Events that close a run: they come last, at or just after the run's end.
CLOSING_EVENTS = frozenset({"playbook_on_stats", "playbook_result"})
# How long after a run's recorded end its own closing events may still be stamped.
CLOSING_GRACE_MS = 10_000


def run_for_event(session: Session, state: ExecutionState, event: StatusEvent) -> int:
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
        if _closes(event, previous_end, ts) and _has_result(session, state, index - 1):
            break
        index -= 1
    run = state.runs.get(index)
    if run is None or run.end_ms is None or ts <= run.end_ms:
        return index
    if index < current:
        return index  # walked back on purpose: a closing event of an earlier run
    ended = status_rank(run.status) >= FINAL_RANK or execution.status_rank >= FINAL_RANK
    if not ended:
        return index
    if _closes(event, run.end_ms, ts) and not _has_result(session, state, index):
        return index
    return index + 1


def _closes(event: StatusEvent, end_ms: int, ts: int) -> bool:
    return event.event_type in CLOSING_EVENTS and ts <= end_ms + CLOSING_GRACE_MS


def _has_result(session: Session, state: ExecutionState, run_index: int) -> bool:
    """Whether the run's own `playbook_result` was stored already (in this batch or before)."""
    if run_index in state.results:
        return True
    found = session.scalar(
        select(Event.id)
        .where(
            Event.execution_pk == state.execution.id,
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


def apply_event(
    session: Session, state: ExecutionState, event: StatusEvent, now: dt.datetime
) -> int:
    execution = state.execution
    run_index = run_for_event(session, state, event)
    run = state.run(session, run_index)
    ts = event.timestamp_ms
    at = ms_to_datetime(ts) or now
    if ts is not None and (run.start_ms is None or (run.start_derived and ts < run.start_ms)):
        run.start_ms, run.started_at, run.start_derived = ts, ms_to_datetime(ts), True
    if ts is not None and (execution.last_event_at is None or at > execution.last_event_at):
        execution.last_event_at = at

    message = event.message if isinstance(event.message, Mapping) else {}
    if event.event_type in CLOSING_EVENTS:
        stats = message.get("stats")
        if isinstance(stats, Mapping) and stats:
            # Every host of the run, failed or not: the share a `failed_hosts` rule reads.
            run.host_count = max(run.host_count or 0, len(stats))
    if event.event_type == "playbook_result":
        state.results.add(run_index)
        status = _final_status(event)
        if ts is not None and (run.end_ms is None or run.end_derived):
            run.end_ms, run.ended_at, run.end_derived = ts, at, True
        set_status(session, state, run_index, status, at)
        stats = message.get("stats")
        if isinstance(stats, Mapping):
            for host, counts in stats.items():
                if not isinstance(counts, Mapping):
                    continue
                if _positive(counts.get("unreachable")):
                    note_failed_host(session, state, run_index, str(host)[:255], "unreachable", at)
                elif _positive(counts.get("failures")):
                    note_failed_host(session, state, run_index, str(host)[:255], "task_failed", at)
        if status == "INIT_FAILURE":
            return run_index
    elif event.event_type in FAILURE_EVENTS:
        set_status(session, state, run_index, "RUNNING", at)
        host = event.host
        if host is not None and message.get("ignore_errors") is not True:
            note_failed_host(
                session, state, run_index, host, FAILURE_EVENTS[event.event_type], at, message
            )
    else:
        set_status(session, state, run_index, "RUNNING", at)
    return run_index


def _positive(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0
