"""Deciding on failed runs: the bridge between the stored record and the pure policy.

The receiver and the reconciler call `decide_failed_runs` inside the transaction that stored
the failure. It gathers what the engine needs (failed hosts, budgets, host history, breaker
outcomes, pauses) with a few bounded queries, asks `app.policy.decide_restart`, and stores
the decision and, for a restart, the outbox row the dispatcher will carry out.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Insert, Select, Table, bindparam, exists, func, literal, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from app import metrics
from app.core.claims import claim_queued
from app.core.errors import Conflict, Invalid
from app.core.insights import record_failure
from app.core.lifecycle import transition
from app.core.notifications import Notice, notify
from app.core.stats import (
    PAUSE_QUERIES,
    BudgetScopes,
    budget_parameters,
    budget_queries,
    budget_scopes,
    budget_usage_of,
    host_failure_times,
    pause_message,
    pause_parameters,
    restart_outcomes,
    signature_sightings,
)
from app.db import announce_restart, lock_decisions
from app.models import (
    ACTIVE_RESTART_STATES,
    Decision,
    Execution,
    ExecutionRun,
    FailureSignature,
    HostFailure,
    Job,
    Restart,
    RestartState,
)
from app.policy import (
    BudgetUsage,
    DecisionInput,
    Policy,
    ReasonCode,
    Sighting,
    Signature,
    decide_restart,
    failure_signature,
)
from app.policy import Decision as PolicyDecision
from app.policy import HostFailure as PolicyHostFailure
from app.runner.documents import FAILED_STATUSES

log = logging.getLogger(__name__)


def log_context(execution: Execution) -> dict[str, str]:
    """The ids a log record about this execution carries (JSON logs show them as fields)."""
    return {
        "execution_id": execution.execution_id,
        "job_id": execution.job_id,
        "account": execution.account_alias,
    }


def auto_decision_key(execution: Execution) -> str:
    return f"auto:{execution.id}:{execution.run_index}"


def _failed_hosts(session: Session, execution: Execution) -> tuple[PolicyHostFailure, ...]:
    # Columns, not objects: a run may name thousands of hosts.
    rows = session.execute(
        select(
            HostFailure.host,
            HostFailure.failure_class,
            HostFailure.message,
            HostFailure.stderr_tail,
            HostFailure.changed,
        )
        .where(
            HostFailure.execution_pk == execution.id,
            HostFailure.run_index == execution.run_index,
        )
        .order_by(HostFailure.host)
    )
    return tuple(
        policy_host_failure(row.host, row.failure_class, row.message, row.stderr_tail, row.changed)
        for row in rows
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


def _sightings(
    session: Session,
    policy: Policy,
    signature: Signature | None,
    execution: Execution,
    now: dt.datetime,
    releasing: bool,
) -> tuple[Sighting, ...]:
    """The signature breaker's input: earlier failures with this signature, and this one
    (not when a held restart is being released: its failure was counted when it was held)."""
    breaker = policy.signature_breaker
    if breaker is None or signature is None or releasing:
        return ()
    earlier = signature_sightings(session, breaker, signature.key, now)
    return (*earlier, Sighting(now, execution.execution_id, execution.job_id))


def decision_input(
    session: Session,
    policy: Policy,
    execution: Execution,
    now: dt.datetime,
    releasing: Restart | None = None,
) -> DecisionInput:
    """Everything the engine needs to decide on the execution's current (failed) run.

    With `releasing`, the input for a held restart being let go: the restart itself is not
    an earlier one, and its signature is not sighted again.
    """
    hosts = _failed_hosts(session, execution)
    context = _context(
        session, policy, execution, now, releasing.id if releasing is not None else None
    )
    signature = failure_signature(hosts)
    held = releasing is not None
    return DecisionInput(
        execution_id=execution.execution_id,
        account=execution.account_alias,
        job_id=execution.job_id,
        job_description=context.job_description,
        status=execution.status,
        run_index=execution.run_index,
        run_count=execution.run_count,
        first_failure_at=execution.first_failure_at or now,
        now=now,
        failed_hosts=hosts,
        prior_restarts=context.prior_restarts,
        usage=context.usage,
        host_failure_times=host_failure_times(session, policy, [h.host for h in hosts], now),
        restart_outcomes=restart_outcomes(session, policy, now),
        paused=context.paused,
        run_host_count=context.run_host_count,
        signature=signature,
        signature_sightings=_sightings(session, policy, signature, execution, now, held),
    )


def remember_signature(session: Session, signature: Signature, now: dt.datetime) -> None:
    """Keep the signature's normalised text, for the pages that list open signatures: one
    statement, that inserts it or moves its `last_seen_at` forward."""
    session.execute(
        _remember_signature(session.get_bind().dialect.name),
        {
            "key": signature.key,
            "failure_class": signature.failure_class,
            "text": signature.text,
            "first_seen_at": now,
            "last_seen_at": now,
        },
    )


@functools.cache
def _remember_signature(dialect: str) -> Insert:
    table: Table = FailureSignature.__table__  # type: ignore[assignment]  # a model's Table
    statement = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)
    return statement.on_conflict_do_update(
        index_elements=[table.c.key],
        set_={"last_seen_at": statement.excluded.last_seen_at},
        where=table.c.last_seen_at < statement.excluded.last_seen_at,
    )


@dataclass(frozen=True)
class StoredDecision:
    decision: Decision
    restart: Restart | None


def store_decision(
    session: Session,
    execution: Execution,
    decision: PolicyDecision,
    key: str,
    now: dt.datetime,
    origin: str = "policy",
) -> StoredDecision:
    """Record the decision; a restart queues an outbox row, due or held."""
    signature = decision.signature
    if signature is not None:
        remember_signature(session, signature, now)
    row = Decision(
        execution_pk=execution.id,
        run_index=execution.run_index,
        decision_key=key,
        origin=origin,
        action=decision.action,
        hosts=list(decision.hosts),
        excluded_hosts=[
            {"host": h.host, "code": h.code, "reason": h.reason} for h in decision.excluded_hosts
        ],
        due_at=decision.due_at,
        backoff_seconds=decision.backoff_seconds,
        rule=decision.rule,
        reason_code=decision.reason_code,
        reason=decision.reason,
        policy_version=decision.policy_version,
        created_at=now,
        signature=signature.key if signature is not None else None,
        deferred_by=decision.deferred_by,
        held_until=decision.held_until,
    )
    session.add(row)
    session.flush()
    if origin == "policy" and signature is not None:
        record_failure(session, signature.key, execution.job_id, now)
    restart = None
    if decision.queued and origin == "policy":
        restart = _queue_restart(
            session, execution, row, decision.due_at or now, now, True, claim=not decision.held
        )
        if decision.held and signature is not None:
            transition(restart, RestartState.HELD, now)
            restart.hold_signature = signature.key
            hold_pending(session, signature.key, now)
    metrics.DECISIONS.labels(
        action=decision.action, reason_code=decision.reason_code, rule=decision.rule
    ).inc()
    log.info(
        "execution %s run %s: %s",
        execution.execution_id,
        execution.run_index,
        decision.reason,
        extra=log_context(execution),
    )
    return StoredDecision(row, restart)


def _queue_restart(
    session: Session,
    execution: Execution,
    decision: Decision,
    due_at: dt.datetime,
    now: dt.datetime,
    counts: bool,
    manual: bool = False,
    claim: bool = False,
) -> Restart:
    """The outbox row of a decision. Due now, it is claimed at once where the transaction
    asked for that and `claim` allows (`app.core.claims`); otherwise the processes'
    dispatchers are told (`announce_restart`)."""
    restart = Restart(
        decision_id=decision.id,
        execution_pk=execution.id,
        run_index=execution.run_index,
        manual=manual,
        counts_against_budget=counts,
        state=RestartState.PENDING,
        hosts=list(decision.hosts),
        due_at=due_at,
        attempts=0,
        timers_before=execution.run_index + 1,
        created_at=now,
        updated_at=now,
    )
    session.add(restart)
    due = due_at <= now
    if not (due and claim and claim_queued(session, restart, execution, now)):
        session.flush()
        if due:
            announce_restart(session)
    return restart


def hold_pending(session: Session, key: str, now: dt.datetime) -> int:
    """The signature's breaker opened: automatic restarts with it that are queued but not yet
    sent wait with the new failure (they are released together, in order)."""
    waiting = session.scalars(
        select(Restart)
        .join(Decision, Decision.id == Restart.decision_id)
        .where(
            Decision.signature == key,
            Restart.state == RestartState.PENDING,
            Restart.manual.is_(False),
        )
        .order_by(Restart.id)
    )
    count = 0
    for restart in waiting:
        transition(restart, RestartState.HELD, now)
        restart.hold_signature = key
        restart.outcome_detail = "held: its error signature's breaker opened before it was sent"
        count += 1
    return count


GAVE_UP_CODES = frozenset(
    {
        ReasonCode.MAX_RESTARTS,
        ReasonCode.DEADLINE,
        ReasonCode.BUDGET_PER_JOB,
        ReasonCode.BUDGET_PER_ACCOUNT,
        ReasonCode.BUDGET_GLOBAL,
        ReasonCode.QUARANTINE,
        ReasonCode.BLACKOUT,
    }
)
"""Skips that give up on a failure respawn would otherwise have restarted: notified as
`gave_up`, like a skip by a rule (or the defaults) that says `notify: true`."""


def tell_gave_up(
    session: Session,
    policy: Policy,
    execution: Execution,
    decision: PolicyDecision,
    row: Decision,
    now: dt.datetime,
) -> None:
    if decision.action != "skip":
        return
    rule = policy.rule(decision.rule)
    settings = rule.settings if rule is not None else policy.defaults
    if decision.reason_code not in GAVE_UP_CODES and not settings.notify:
        return
    job = session.get(Job, execution.job_id) if execution.job_id else None
    failed = list(execution.failed_hosts or ())
    notify(
        session,
        policy,
        Notice(
            kind="gave_up",
            key=f"gave_up:decision:{row.id}",
            summary=f"gave up on {execution.execution_id}: {decision.reason}"[:500],
            execution=execution,
            job_description=job.description if job else None,
            hosts=failed,
            rule=decision.rule,
            reason=decision.reason,
            details={"reason_code": decision.reason_code, "run": execution.run_index + 1},
        ),
        now,
    )


@dataclass
class DecideResult:
    queued: int = 0
    deferred: int = 0
    held: int = 0


def _uses_job_globs(policy: Policy) -> bool:
    return any(rule.when.job for rule in policy.rules)


def decide_failed_runs(
    session: Session,
    executions: Iterable[Execution],
    now: dt.datetime,
    policy: Policy,
    defer_unknown_jobs: bool = False,
) -> DecideResult:
    """Decide each failed run that has no decision yet.

    With `defer_unknown_jobs`, a failure of a job whose record respawn has not fetched yet is
    left undecided when the policy matches jobs by glob (the glob may be meant for the job's
    description); the background fetches the job and then decides (`decide_undecided`).
    """
    result = DecideResult()
    failed = [e for e in executions if e.status in FAILED_STATUSES]
    if not failed:
        return result
    keys = {auto_decision_key(e): e for e in failed}
    decided = set(
        session.scalars(select(Decision.decision_key).where(Decision.decision_key.in_(keys)))
    )
    known_jobs: set[str] = set()
    if defer_unknown_jobs and _uses_job_globs(policy):
        job_ids = {e.job_id for e in failed if e.job_id}
        known_jobs = set(session.scalars(select(Job.job_id).where(Job.job_id.in_(job_ids))))
    else:
        defer_unknown_jobs = False
    if set(keys) - decided:
        lock_decisions(session)
    for key, execution in keys.items():
        if key in decided:
            continue
        if defer_unknown_jobs and execution.job_id and execution.job_id not in known_jobs:
            result.deferred += 1
            continue
        decision = decide_restart(policy, decision_input(session, policy, execution, now))
        stored = store_decision(session, execution, decision, key, now)
        tell_gave_up(session, policy, execution, decision, stored.decision, now)
        result.queued += stored.restart is not None and decision.restart
        result.held += decision.held
    return result


def undecided_failures(session: Session, limit: int = 200) -> list[Execution]:
    """Failed executions whose current run has no decision yet (deferred or missed); a
    manual restart of the run counts as its decision."""
    decided = exists().where(
        Decision.execution_pk == Execution.id,
        Decision.run_index == Execution.run_index,
    )
    return list(
        session.scalars(
            select(Execution)
            .where(Execution.status.in_(FAILED_STATUSES), ~decided)
            .order_by(Execution.id)
            .limit(limit)
        )
    )


def queue_manual_restart(
    session: Session,
    execution: Execution,
    hosts: Sequence[str] | None,
    actor: str,
    now: dt.datetime,
    policy: Policy,
    note: str | None = None,
) -> StoredDecision:
    """An operator's restart, through the same outbox; hosts None means every failed host."""
    if execution.status not in FAILED_STATUSES:
        raise Conflict(
            f"execution is {execution.status}; only a failed execution can be restarted",
            code="not_failed",
        )
    active = session.scalar(
        select(func.count())
        .select_from(Restart)
        .where(Restart.execution_pk == execution.id, Restart.state.in_(ACTIVE_RESTART_STATES))
    )
    if active:
        raise Conflict("a restart of this execution is already pending", code="restart_pending")
    failed = list(execution.failed_hosts)
    chosen = failed if hosts is None else list(dict.fromkeys(hosts))
    unknown = [h for h in chosen if h not in failed]
    if unknown:
        raise Invalid(
            "hosts must be among the execution's failed hosts",
            fields={"hosts": [f"{h!r} did not fail in the current run" for h in unknown]},
        )
    if not chosen and execution.status != "INIT_FAILURE" and hosts is None:
        raise Invalid(
            "no failed hosts are known; pass an empty host list to restart without one",
            fields={"hosts": ["No failed hosts known."]},
        )
    what = f"{len(chosen)} of {len(failed)} failed hosts" if chosen else "with no host list"
    reason = f"manual restart {what} by {actor}" + (f": {note}" if note else "")
    row = Decision(
        execution_pk=execution.id,
        run_index=execution.run_index,
        decision_key=f"manual:{uuid.uuid4().hex}",
        origin="manual",
        action="restart",
        hosts=chosen,
        excluded_hosts=[],
        due_at=now,
        backoff_seconds=0.0,
        rule="manual",
        reason_code="manual",
        reason=reason,
        policy_version=policy.version_hash,
        actor=actor,
        created_at=now,
    )
    session.add(row)
    session.flush()
    restart = _queue_restart(
        session, execution, row, now, now, policy.limits.count_manual, manual=True
    )
    metrics.DECISIONS.labels(action="restart", reason_code="manual", rule="manual").inc()
    return StoredDecision(row, restart)
