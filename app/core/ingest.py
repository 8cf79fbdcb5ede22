"""Recording the Runner's feed: store each delivery once, apply it, decide what failed.

The receiver stores deliveries in the inbox (`app.core.inbox.store`) and answers; the intake
applies them right after (`app.core.inbox.process`). The paths that fetch documents
themselves (restart answers, the reconciler) store and apply in one go with the functions
here, in the caller's transaction; so does the receiver when asked to answer only once
processed. Parsing and keys live in `app.core.deliveries`, the run state machine in
`app.core.runs`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from app.core.decisions import DecideResult
from app.core.deliveries import (
    Delivery,
    delivery_key,
    document_deliveries,
    document_payload,
    parse_deliveries,
)
from app.core.inbox import process, store, store_applied
from app.core.insights import record_restart_outcomes
from app.core.runs import ExecutionState, set_status
from app.models import Execution
from app.policy import Policy
from app.runner.documents import ExecutionDocument

__all__ = [
    "Delivery",
    "IngestResult",
    "Ingested",
    "advance_to_run",
    "delivery_key",
    "document_deliveries",
    "document_payload",
    "ingest_and_decide",
    "parse_deliveries",
    "record_answer",
    "record_deliveries",
    "record_documents",
]


@dataclass
class IngestResult:
    accepted: int = 0
    duplicates: int = 0
    executions: dict[str, Execution] = field(default_factory=dict)


@dataclass(frozen=True)
class Ingested:
    stored: IngestResult
    decided: DecideResult


def _ingest(
    session: Session,
    deliveries: Sequence[Delivery],
    now: dt.datetime,
    policy: Policy | None,
    defer_unknown_jobs: bool,
    leave_big: bool = False,
) -> Ingested:
    stored = store(session, deliveries, now)
    fresh = [d for d, new in zip(deliveries, stored.new, strict=True) if new]
    processed = process(
        session,
        {d.execution_id for d in fresh},
        now,
        policy,
        defer_unknown_jobs=defer_unknown_jobs,
        parsed={d.delivery_key: d.item for d in fresh},
        leave_big=leave_big,
    )
    result = IngestResult(stored.accepted, stored.duplicates, processed.executions)
    return Ingested(result, processed.decided)


def record_deliveries(
    session: Session, deliveries: Sequence[Delivery], now: dt.datetime
) -> IngestResult:
    """Store each new delivery and apply it to its execution; flush, never commit."""
    return _ingest(session, deliveries, now, None, False).stored


def record_documents(
    session: Session, documents: Sequence[ExecutionDocument], now: dt.datetime
) -> IngestResult:
    """Record execution documents respawn fetched itself; flush, never commit."""
    return record_deliveries(session, document_deliveries(documents), now)


def record_answer(
    session: Session, execution: Execution, document: ExecutionDocument, now: dt.datetime
) -> None:
    """Record the document the Runner answered about `execution`, which the caller holds
    locked (a restart call's answer): stored and applied at once (`inbox.store_applied`), not
    through the inbox. Flush, never commit."""
    if document.execution_id != execution.execution_id:
        record_documents(session, [document], now)  # about another execution: the inbox's way
        return
    store_applied(session, ExecutionState.load(session, execution), document, now)


def ingest_and_decide(
    session: Session,
    deliveries: Sequence[Delivery],
    now: dt.datetime,
    policy: Policy,
    defer_unknown_jobs: bool,
    leave_big: bool = False,
) -> Ingested:
    """Store deliveries, apply them and decide every run they made failed, in the caller's
    transaction.

    With `defer_unknown_jobs`, a failure of a job respawn has not fetched yet waits for the
    job's record when the policy matches job globs. With `leave_big`, as the intake does, a
    run naming thousands of failed hosts is left to be decided in two steps
    (`app.core.big_runs`).
    """
    return _ingest(session, deliveries, now, policy, defer_unknown_jobs, leave_big)


def advance_to_run(
    session: Session, execution: Execution, run_index: int, status: str, now: dt.datetime
) -> None:
    """Move an execution forward to a run (a restart respawn saw accepted)."""
    state = ExecutionState.load(session, execution)
    set_status(session, state, run_index, status, now)
    state.finish()
    record_restart_outcomes(session, state.settled)
