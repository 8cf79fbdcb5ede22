"""The stored record as a backtest replays it: decisions in time order, batch by batch.

Each batch is read in one short transaction with a fixed number of queries, and turned into
plain values (no ORM objects), each with what the engine needs to decide it again.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from app.core.decision_inputs import policy_host_failure
from app.core.stats import job_descriptions
from app.models import Decision, Execution, ExecutionRun, HostFailure, Restart, RestartState
from app.policy import HostFailure as PolicyHostFailure
from app.policy import RestartOutcome
from app.runner.documents import FAILED_STATUSES, FINAL_STATUSES

SessionScope = Callable[[], AbstractContextManager[Session]]
"""Opens one transaction, e.g. ``runtime.transaction``; a backtest opens one per batch."""


@dataclass(frozen=True)
class Verdict:
    action: str
    """restart, skip, held, or ``not_reached`` (candidate only)."""
    hosts: tuple[str, ...]
    rule: str
    reason_code: str
    reason: str
    deferred_by: str | None = None
    """The blackout the restart was deferred to the end of."""


@dataclass(frozen=True, slots=True)
class Stored:
    """One stored decision with what its replay needs: plain values, no ORM objects."""

    id: int
    at: dt.datetime
    origin: str
    verdict: Verdict
    excluded_codes: tuple[str, ...]
    policy_version: str
    execution_pk: int
    execution_id: str
    account: str
    job_id: str
    first_failure_at: dt.datetime | None
    run_index: int
    run_status: str = "FAILURE"
    job_description: str | None = None
    failed_hosts: tuple[PolicyHostFailure, ...] = ()
    failure_times: tuple[tuple[str, dt.datetime], ...] = ()
    next_outcome: RestartOutcome | None = None
    """How the execution's next run really ended, if it did: the outcome of restarting this run."""
    restarts_before: int = 0
    """The execution's automatic restarts stored before the replay starts."""
    run_host_count: int | None = None
    """Every host of the failed run, when its stats were stored."""


def stored_batches(
    sessions: SessionScope, start: dt.datetime, until: dt.datetime, batch_size: int
) -> Iterator[list[Stored]]:
    """The stored decisions in [start, until] by (created_at, id), ``batch_size`` at a time."""
    after: tuple[dt.datetime, int] | None = None
    while True:
        with sessions() as session:
            batch = _read_batch(session, start, until, after, batch_size)
        if batch:
            yield batch
        if len(batch) < batch_size:
            return
        after = (batch[-1].at, batch[-1].id)


def _read_batch(
    session: Session,
    start: dt.datetime,
    until: dt.datetime,
    after: tuple[dt.datetime, int] | None,
    batch_size: int,
) -> list[Stored]:
    query = (
        select(
            Decision.id,
            Decision.created_at,
            Decision.origin,
            Decision.action,
            Decision.hosts,
            Decision.excluded_hosts,
            Decision.rule,
            Decision.reason_code,
            Decision.reason,
            Decision.policy_version,
            Decision.deferred_by,
            Decision.run_index,
            Execution.id.label("execution_pk"),
            Execution.execution_id,
            Execution.account_alias,
            Execution.job_id,
            Execution.first_failure_at,
        )
        .join(Execution, Execution.id == Decision.execution_pk)
        # A release (a held restart let go) belongs to the decision that held it.
        .where(Decision.created_at >= start, Decision.created_at <= until)
        .where(Decision.origin != "release")
        .order_by(Decision.created_at, Decision.id)
        .limit(batch_size)
    )
    if after is not None:
        at, last_id = after
        query = query.where(
            or_(Decision.created_at > at, and_(Decision.created_at == at, Decision.id > last_id))
        )
    rows = session.execute(query).all()
    runs = {(row.execution_pk, row.run_index) for row in rows if row.origin == "policy"}
    failures = _host_failures(session, runs)
    statuses = _run_ends(session, runs | {(pk, run + 1) for pk, run in runs})
    descriptions = job_descriptions(session, sorted({row.job_id for row in rows if row.job_id}))
    before = _restarts_before(session, {row.execution_pk for row in rows}, start)
    batch = []
    for row in rows:
        key = (row.execution_pk, row.run_index)
        hosts = failures.get(key, [])
        status, _, host_count = statuses.get(key, ("FAILURE", None, None))
        next_status, ended_at, _ = statuses.get(
            (row.execution_pk, row.run_index + 1), ("", None, None)
        )
        outcome = None
        if next_status in FINAL_STATUSES and ended_at is not None:
            outcome = RestartOutcome(ended_at, next_status in FAILED_STATUSES)
        batch.append(
            Stored(
                id=row.id,
                at=row.created_at,
                origin=row.origin,
                verdict=Verdict(
                    row.action,
                    tuple(row.hosts or ()),
                    row.rule,
                    row.reason_code,
                    row.reason,
                    row.deferred_by,
                ),
                excluded_codes=tuple(str(e.get("code", "")) for e in row.excluded_hosts or ()),
                policy_version=row.policy_version,
                execution_pk=row.execution_pk,
                execution_id=row.execution_id,
                account=row.account_alias,
                job_id=row.job_id,
                first_failure_at=row.first_failure_at,
                run_index=row.run_index,
                # The decision was made on a failed run; a later document cannot make it less so.
                run_status=status if status in FAILED_STATUSES else "FAILURE",
                job_description=descriptions.get(row.job_id),
                failed_hosts=tuple(failure for failure, _ in hosts),
                failure_times=tuple((failure.host, at) for failure, at in hosts),
                next_outcome=outcome,
                restarts_before=before.get(row.execution_pk, 0),
                run_host_count=host_count,
            )
        )
    return batch


def _host_failures(
    session: Session, runs: set[tuple[int, int]]
) -> dict[tuple[int, int], list[tuple[PolicyHostFailure, dt.datetime]]]:
    if not runs:
        return {}
    found: dict[tuple[int, int], list[tuple[PolicyHostFailure, dt.datetime]]] = {}
    rows = session.execute(
        select(
            HostFailure.execution_pk,
            HostFailure.run_index,
            HostFailure.host,
            HostFailure.failure_class,
            HostFailure.message,
            HostFailure.stderr_tail,
            HostFailure.changed,
            HostFailure.occurred_at,
        )
        # By execution, then by run here: a plain IN compiles far faster than a tuple IN.
        .where(HostFailure.execution_pk.in_({pk for pk, _ in runs}))
        .order_by(HostFailure.execution_pk, HostFailure.run_index, HostFailure.host)
    )
    for pk, run, host, failure_class, message, stderr_tail, changed, occurred_at in rows:
        if (pk, run) not in runs:
            continue
        failure = policy_host_failure(host, failure_class, message, stderr_tail, changed)
        found.setdefault((pk, run), []).append((failure, occurred_at))
    return found


def _run_ends(
    session: Session, runs: set[tuple[int, int]]
) -> dict[tuple[int, int], tuple[str, dt.datetime | None, int | None]]:
    if not runs:
        return {}
    rows = session.execute(
        select(
            ExecutionRun.execution_pk,
            ExecutionRun.run_index,
            ExecutionRun.status,
            ExecutionRun.ended_at,
            ExecutionRun.host_count,
        ).where(ExecutionRun.execution_pk.in_({pk for pk, _ in runs}))
    )
    return {
        (pk, run): (status, ended_at, hosts)
        for pk, run, status, ended_at, hosts in rows
        if (pk, run) in runs
    }


def _restarts_before(session: Session, pks: set[int], start: dt.datetime) -> dict[int, int]:
    """Automatic restarts (not cancelled) of each execution stored before the replay starts."""
    if not pks:
        return {}
    rows = session.execute(
        select(Restart.execution_pk, func.count())
        .where(
            Restart.execution_pk.in_(pks),
            Restart.manual.is_(False),
            Restart.state != RestartState.CANCELLED,
            Restart.created_at < start,
        )
        .group_by(Restart.execution_pk)
    )
    return {pk: count for pk, count in rows}
