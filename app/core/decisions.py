"""Deciding on failed runs: the bridge between the stored record and the pure policy.

The receiver and the reconciler call `decide_failed_runs` inside the transaction that stored
the failure. It gathers what the engine needs (failed hosts, budgets, host history, breaker
outcomes, pauses) with a few bounded queries, asks `app.policy.decide_restart`, and stores
the decision and, for a restart, the outbox row the dispatcher will carry out.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import exists, func, select
from sqlalchemy.orm import Session

from app import metrics
from app.core.errors import Conflict, Invalid
from app.core.stats import budget_usage, host_failure_times, pause_reason, restart_outcomes
from app.models import (
    ACTIVE_RESTART_STATES,
    Decision,
    Execution,
    HostFailure,
    Job,
    Restart,
    RestartState,
)
from app.policy import Decision as PolicyDecision
from app.policy import DecisionInput, Policy, decide_restart
from app.policy import HostFailure as PolicyHostFailure
from app.runner.documents import FAILED_STATUSES

log = logging.getLogger(__name__)


def auto_decision_key(execution: Execution) -> str:
    return f"auto:{execution.id}:{execution.run_index}"


def _failed_hosts(session: Session, execution: Execution) -> tuple[PolicyHostFailure, ...]:
    rows = session.scalars(
        select(HostFailure)
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


def _prior_restarts(session: Session, execution: Execution) -> int:
    return (
        session.scalar(
            select(func.count())
            .select_from(Restart)
            .where(
                Restart.execution_pk == execution.id,
                Restart.manual.is_(False),
                Restart.state != RestartState.CANCELLED,
            )
        )
        or 0
    )


def decision_input(
    session: Session, policy: Policy, execution: Execution, now: dt.datetime
) -> DecisionInput:
    """Everything the engine needs to decide on the execution's current (failed) run."""
    hosts = _failed_hosts(session, execution)
    job = session.get(Job, execution.job_id) if execution.job_id else None
    return DecisionInput(
        execution_id=execution.execution_id,
        account=execution.account_alias,
        job_id=execution.job_id,
        job_description=job.description if job else None,
        status=execution.status,
        run_index=execution.run_index,
        run_count=execution.run_count,
        first_failure_at=execution.first_failure_at or now,
        now=now,
        failed_hosts=hosts,
        prior_restarts=_prior_restarts(session, execution),
        usage=budget_usage(session, policy, execution, now),
        host_failure_times=host_failure_times(session, policy, [h.host for h in hosts], now),
        restart_outcomes=restart_outcomes(session, policy, now),
        paused=pause_reason(session, execution.job_id),
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
) -> StoredDecision:
    row = Decision(
        execution_pk=execution.id,
        run_index=execution.run_index,
        decision_key=key,
        origin="policy",
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
    )
    session.add(row)
    session.flush()
    restart = None
    if decision.restart:
        restart = _queue_restart(session, execution, row, decision.due_at or now, now, True)
    metrics.DECISIONS.labels(action=decision.action, reason_code=decision.reason_code).inc()
    log.info(
        "execution %s run %s: %s", execution.execution_id, execution.run_index, decision.reason
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
) -> Restart:
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
    session.flush()
    return restart


@dataclass
class DecideResult:
    queued: int = 0
    deferred: int = 0


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
    for key, execution in keys.items():
        if key in decided:
            continue
        if defer_unknown_jobs and execution.job_id and execution.job_id not in known_jobs:
            result.deferred += 1
            continue
        decision = decide_restart(policy, decision_input(session, policy, execution, now))
        stored = store_decision(session, execution, decision, key, now)
        result.queued += stored.restart is not None
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
    metrics.DECISIONS.labels(action="restart", reason_code="manual").inc()
    return StoredDecision(row, restart)
