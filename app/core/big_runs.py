"""Deciding a failed run that names thousands of hosts, in two steps.

What a decision reads and computes grows with the run's failed hosts: each host with its
message, each host's recent failures (the per-host limit), the signature over all of them,
the engine's matching. For 10,000 hosts that is 100-300 ms, more as the hosts' history
grows. Inside the transaction that applied the document it would hold SQLite's one write
lock (and PostgreSQL's decision lock) all that time, and every callback behind it would
wait. So the intake leaves such a run out of that transaction (`decide_failed_runs(...,
leave_big=True)`, above `BIG_RUN_HOSTS`) and decides it here, in two steps:

1. `prepare`, in a read-only transaction (no lock on either database): read the inputs, and
   note what the run looked like (its run, its failed hosts, when it was last heard of);
2. `decide_prepared`, in a short write transaction: lock the execution. If anything was
   applied to it since, decide it there the usual way. Otherwise read the single values
   that other decisions or an operator may have changed meanwhile (budgets, pauses, earlier
   restarts), run the engine and store the decision.

The hosts' recent failures and the signature's sightings may then miss a failure stored by
another execution between the two steps, as if that one had arrived a moment later. A run
left undecided by a crash between the steps is found again by `undecided_big_runs`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core.decision_inputs import BIG_RUN_HOSTS, decision_input
from app.core.decisions import (
    DecideResult,
    auto_decision_key,
    decide_failed_runs,
    undecided_failures,
    waits_for_job,
)
from app.db import locked
from app.models import Decision, Execution
from app.policy import DecisionInput, Policy
from app.runner.documents import FAILED_STATUSES

Seen = tuple[int, str, dt.datetime, tuple[str, ...]]
"""What an execution looked like: its run, its status, when it was last heard of, its
failed hosts."""


@dataclass(frozen=True)
class Prepared:
    """A big run's decision input, and what the run looked like when it was read."""

    execution_id: str
    seen: Seen
    inputs: DecisionInput


def _seen(execution: Execution) -> Seen:
    """What changes when anything is applied to the execution."""
    return (
        execution.run_index,
        execution.status,
        execution.last_seen_at,
        tuple(execution.failed_hosts or ()),
    )


def prepare(
    session: Session,
    policy: Policy,
    execution_id: str,
    now: dt.datetime,
    defer_unknown_jobs: bool,
) -> Prepared | None:
    """Step one, in a read-only transaction: the input of the execution's failed run, or
    None when there is nothing to decide (not failed, decided already, waiting for its
    job's record)."""
    execution = session.scalars(
        select(Execution).where(Execution.execution_id == execution_id)
    ).one_or_none()
    if execution is None or execution.status not in FAILED_STATUSES:
        return None
    decided = select(Decision.id).where(Decision.decision_key == auto_decision_key(execution))
    if session.scalar(decided) is not None:
        return None
    if waits_for_job(session, policy, execution, defer_unknown_jobs):
        return None
    inputs = decision_input(session, policy, execution, now)
    return Prepared(execution_id, _seen(execution), inputs)


def decide_prepared(
    session: Session,
    policy: Policy,
    prepared: Prepared,
    now: dt.datetime,
    defer_unknown_jobs: bool,
) -> DecideResult:
    """Step two, in a write transaction: decide and store, from the prepared input when
    nothing was applied to the execution since; flushes, never commits."""
    execution = session.scalars(
        locked(session, select(Execution).where(Execution.execution_id == prepared.execution_id))
    ).one_or_none()
    if execution is None:
        return DecideResult()
    unchanged = _seen(execution) == prepared.seen
    return decide_failed_runs(
        session,
        [execution],
        now,
        policy,
        defer_unknown_jobs,
        prepared={execution.execution_id: prepared.inputs} if unchanged else None,
    )


def undecided_big_runs(session: Session, before: dt.datetime) -> list[str]:
    """Big failed runs last heard of before `before` and still undecided (a crash between
    the two steps, or a failed second step)."""
    return [
        execution.execution_id
        for execution in undecided_failures(session)
        if len(execution.failed_hosts or ()) > BIG_RUN_HOSTS and execution.last_seen_at < before
    ]
