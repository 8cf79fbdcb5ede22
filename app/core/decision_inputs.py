"""What the policy engine reads to decide on a failed run, from the stored record.

`decision_input` gathers the engine's input with a few bounded queries: the run's failed
hosts with their messages, the single values (job description, earlier restarts, the run's
host count, pauses, budgets) in one statement, the hosts' recent failures, the breaker's
outcomes and the signature's sightings. `refreshed_input` reads the single values again for
an input read earlier (a big run decided in two steps, `app.core.big_runs`).

A batch of failed runs decided together reads all but the single values once for the batch
(`read_batch`, `read_sightings`): the same rows, a statement each instead of one per run.
"""

from __future__ import annotations

import bisect
import datetime as dt
import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy import Select, bindparam, func, literal, select, tuple_
from sqlalchemy.orm import Session

from app.core.history import closed_at, host_failure_times, sightings_for, sightings_of
from app.core.stats import (
    MAX_SIGHTINGS,
    PAUSE_QUERIES,
    BudgetScopes,
    budget_parameters,
    budget_queries,
    budget_scopes,
    budget_usage_of,
    pause_message,
    pause_parameters,
    restart_outcomes,
)
from app.models import (
    Execution,
    ExecutionRun,
    HostFailure,
    Job,
    Restart,
    RestartState,
)
from app.policy import (
    BudgetUsage,
    DecisionInput,
    Policy,
    RestartOutcome,
    Sighting,
    Signature,
    failure_signature,
)
from app.policy import HostFailure as PolicyHostFailure

log = logging.getLogger(__name__)


_FAILED_HOST_COLUMNS = (
    HostFailure.host,
    HostFailure.failure_class,
    HostFailure.message,
    HostFailure.stderr_tail,
    HostFailure.changed,
)


def _failed_hosts(session: Session, execution: Execution) -> tuple[PolicyHostFailure, ...]:
    # Columns, not objects: a run may name thousands of hosts.
    rows = session.execute(
        select(*_FAILED_HOST_COLUMNS)
        .where(
            HostFailure.execution_pk == execution.id,
            HostFailure.run_index == execution.run_index,
        )
        .order_by(HostFailure.host)
    )
    return tuple(_policy_failure(row) for row in rows)


def _policy_failure(row: Any) -> PolicyHostFailure:
    return policy_host_failure(
        row.host, row.failure_class, row.message, row.stderr_tail, row.changed
    )


def policy_host_failure(
    host: str,
    failure_class: str,
    message: str | None,
    stderr_tail: str | None,
    changed: int | None,
) -> PolicyHostFailure:
    """A stored host failure as the policy sees it."""
    # A message rule must see the real error text, which Ansible often puts in stderr.
    text = "\n".join(part for part in (message, stderr_tail) if part)
    return PolicyHostFailure(host, failure_class, text, changed)


BIG_RUN_HOSTS = 1_000
"""A failed run naming more hosts than this may be decided in two steps (`leave_big`): what
its decision reads and computes grows with its hosts (100-300 ms for 10,000), and inside the
transaction that applied it every callback behind would wait (`app.core.big_runs`)."""


@dataclass(frozen=True)
class _Context:
    """The engine's single-valued inputs about an execution, read in one statement."""

    job_description: str | None
    prior_restarts: int
    run_host_count: int | None
    paused: str | None
    usage: BudgetUsage


def _context(
    session: Session,
    policy: Policy,
    execution: Execution,
    now: dt.datetime,
    leaving_out: int | None,
) -> _Context:
    """Its job's description, its earlier automatic restarts, its run's host count, the
    pauses that apply and the budgets used: one round trip (one each, seven with the
    project's policy, were a third of a decision's time on PostgreSQL), of a statement built
    once per set of budgets (building it took longer than running it)."""
    values = {
        "pk": execution.id,
        "job": execution.job_id or None,
        "run_index": execution.run_index,
        "leaving_out": leaving_out,
        **pause_parameters(execution.job_id),
        **budget_parameters(policy, execution, now),
    }
    query = _context_query(budget_scopes(policy), leaving_out is not None)
    row = session.execute(query, values).one()
    description, prior_restarts, host_count, global_by, job_by, *budgets = row
    return _Context(
        description,
        prior_restarts or 0,
        host_count,
        pause_message(global_by, job_by),
        budget_usage_of(budgets),
    )


@functools.cache
def _context_query(scopes: BudgetScopes, leaving_out: bool) -> Select[Any]:
    prior = (
        select(func.count())
        .select_from(Restart)
        .where(
            Restart.execution_pk == bindparam("pk"),
            Restart.manual.is_(False),
            Restart.state != RestartState.CANCELLED,
        )
    )
    if leaving_out:
        prior = prior.where(Restart.id != bindparam("leaving_out"))
    return select(
        select(Job.description).where(Job.job_id == bindparam("job")).scalar_subquery(),
        prior.scalar_subquery(),
        select(ExecutionRun.host_count)
        .where(
            ExecutionRun.execution_pk == bindparam("pk"),
            ExecutionRun.run_index == bindparam("run_index"),
        )
        .scalar_subquery(),
        *(query.scalar_subquery() for query in PAUSE_QUERIES),
        *(
            literal(0) if query is None else query.scalar_subquery()
            for query in budget_queries(scopes)
        ),
    )


@dataclass
class BatchInputs:
    """What the decisions of one batch read together. The failed hosts, the hosts' recent
    failures and the breaker's outcomes are read before the decision lock: no decision
    changes them (what another process records while this one waits for the lock counts
    from the next batch on). The signatures' sightings, and when an operator last closed
    them, are read under it, and each decision the batch stores is added to them
    (`decided`) as the next one's query would find it."""

    failed_hosts: dict[tuple[int, int], tuple[PolicyHostFailure, ...]]
    host_times: dict[str, tuple[dt.datetime, ...]]
    outcomes: tuple[RestartOutcome, ...]
    sightings: dict[str, list[Sighting]] = field(default_factory=dict)
    closed: dict[str, dt.datetime] = field(default_factory=dict)

    def hosts_of(self, execution: Execution) -> tuple[PolicyHostFailure, ...]:
        return self.failed_hosts.get((execution.id, execution.run_index), ())

    def decided(self, inputs: DecisionInput) -> None:
        """The decision on `inputs` was stored: its own sighting (the last of the input's)
        counts for the batch's later decisions, as `sightings_of` would find it; not when an
        operator closed the breaker at its time or later."""
        if inputs.signature is None or not inputs.signature_sightings:
            return
        sighting = inputs.signature_sightings[-1]
        found = self.sightings.get(inputs.signature.key)
        closed = self.closed.get(inputs.signature.key)
        if found is not None and (closed is None or sighting.at > closed):
            bisect.insort(found, sighting)
            del found[:-MAX_SIGHTINGS]


def read_batch(
    session: Session, policy: Policy, executions: Sequence[Execution], now: dt.datetime
) -> BatchInputs:
    """The batch's failed hosts, their recent failures and the breaker's outcomes."""
    failed: dict[tuple[int, int], list[PolicyHostFailure]] = {
        (e.id, e.run_index): [] for e in executions
    }
    rows = session.execute(
        select(HostFailure.execution_pk, HostFailure.run_index, *_FAILED_HOST_COLUMNS)
        .where(tuple_(HostFailure.execution_pk, HostFailure.run_index).in_(list(failed)))
        .order_by(HostFailure.execution_pk, HostFailure.run_index, HostFailure.host)
    )
    for row in rows:
        failed[(row.execution_pk, row.run_index)].append(_policy_failure(row))
    hosts = sorted({h.host for found in failed.values() for h in found})
    return BatchInputs(
        failed_hosts={run: tuple(found) for run, found in failed.items()},
        host_times=host_failure_times(session, policy, hosts, now),
        outcomes=restart_outcomes(session, policy, now),
    )


def read_sightings(session: Session, policy: Policy, batch: BatchInputs, now: dt.datetime) -> None:
    """The sightings of the batch's signatures (under the decision lock: they count what
    other processes decided)."""
    breaker = policy.signature_breaker
    if breaker is None:
        return
    signatures = (failure_signature(hosts) for hosts in batch.failed_hosts.values())
    keys = {signature.key for signature in signatures if signature is not None}
    if keys:
        batch.sightings = sightings_of(session, breaker, keys, now)
        batch.closed = closed_at(session, keys)


def _sightings(
    session: Session,
    policy: Policy,
    signature: Signature | None,
    execution: Execution,
    now: dt.datetime,
    releasing: bool,
    batch: BatchInputs | None,
) -> tuple[Sighting, ...]:
    """The signature breaker's input: earlier failures with this signature, and this one
    (not when a held restart is being released: its failure was counted when it was held)."""
    breaker = policy.signature_breaker
    if breaker is None or signature is None or releasing:
        return ()
    if batch is not None and signature.key in batch.sightings:
        earlier = tuple(batch.sightings[signature.key])
    else:
        earlier = tuple(sightings_for(session, breaker, signature.key, now))
    return (*earlier, Sighting(now, execution.execution_id, execution.job_id))


def decision_input(
    session: Session,
    policy: Policy,
    execution: Execution,
    now: dt.datetime,
    releasing: Restart | None = None,
    batch: BatchInputs | None = None,
) -> DecisionInput:
    """Everything the engine needs to decide on the execution's current (failed) run.

    With `releasing`, the input for a held restart being let go: the restart itself is not
    an earlier one, and its signature is not sighted again. With `batch`, what it read for
    the execution is taken from there.
    """
    if batch is None:
        hosts = _failed_hosts(session, execution)
        times = host_failure_times(session, policy, [h.host for h in hosts], now)
        outcomes = restart_outcomes(session, policy, now)
    else:
        hosts = batch.hosts_of(execution)
        times = {h.host: batch.host_times[h.host] for h in hosts} if batch.host_times else {}
        outcomes = batch.outcomes
    signature = failure_signature(hosts)
    held = releasing is not None
    return DecisionInput(
        execution_id=execution.execution_id,
        run_index=execution.run_index,
        now=now,
        failed_hosts=hosts,
        host_failure_times=times,
        restart_outcomes=outcomes,
        signature=signature,
        signature_sightings=_sightings(session, policy, signature, execution, now, held, batch),
        **_current(session, policy, execution, now, releasing),
    )


def refreshed_input(
    session: Session, policy: Policy, execution: Execution, earlier: DecisionInput
) -> DecisionInput:
    """`earlier` with the execution's own values and the single values read afresh: the
    job's description, earlier restarts, the run's host count, pauses and budgets (what
    another decision or an operator may have changed since `earlier` was read)."""
    return replace(earlier, **_current(session, policy, execution, earlier.now, None))


def _current(
    session: Session,
    policy: Policy,
    execution: Execution,
    now: dt.datetime,
    releasing: Restart | None,
) -> dict[str, Any]:
    """The input's fields that another transaction may change at any moment: the
    execution's own values and the single values (`_context`)."""
    leaving_out = releasing.id if releasing is not None else None
    context = _context(session, policy, execution, now, leaving_out)
    return {
        "account": execution.account_alias,
        "job_id": execution.job_id,
        "job_description": context.job_description,
        "status": execution.status,
        "run_count": execution.run_count,
        "first_failure_at": execution.first_failure_at or now,
        "prior_restarts": context.prior_restarts,
        "usage": context.usage,
        "paused": context.paused,
        "run_host_count": context.run_host_count,
    }
