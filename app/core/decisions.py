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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from sqlalchemy import Insert, Table, exists, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from app import metrics
from app.core.claims import claim_queued
from app.core.decision_inputs import (
    BIG_RUN_HOSTS,
    decision_input,
    read_batch,
    read_sightings,
    refreshed_input,
)
from app.core.errors import Conflict, Invalid
from app.core.insights import record_failure
from app.core.lifecycle import transition
from app.core.notifications import Notice, notify
from app.db import announce_restart, lock_decisions
from app.models import (
    ACTIVE_RESTART_STATES,
    Decision,
    Execution,
    FailureSignature,
    Job,
    Restart,
    RestartState,
)
from app.policy import Decision as PolicyDecision
from app.policy import (
    DecisionInput,
    Policy,
    ReasonCode,
    Signature,
    decide_restart,
)
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
        execution.run_index + 1,  # counted from 1, as the admin UI does
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
    big: list[str] = field(default_factory=list)
    """Executions whose failed run was left to be decided in two steps (`leave_big`)."""


def _uses_job_globs(policy: Policy) -> bool:
    return any(rule.when.job for rule in policy.rules)


def waits_for_job(
    session: Session, policy: Policy, execution: Execution, defer_unknown_jobs: bool
) -> bool:
    """Whether `decide_failed_runs` would leave the execution's failure for its job's record
    (`defer_unknown_jobs`)."""
    return execution.job_id in _unknown_jobs(session, policy, [execution], defer_unknown_jobs)


def _unknown_jobs(
    session: Session, policy: Policy, executions: Iterable[Execution], defer_unknown_jobs: bool
) -> set[str]:
    """The jobs of these executions whose record respawn has not fetched yet, when their
    failures wait for it: with `defer_unknown_jobs`, under a policy that matches jobs by glob
    (the glob may be meant for the job's description). Otherwise none."""
    if not (defer_unknown_jobs and _uses_job_globs(policy)):
        return set()
    job_ids = {e.job_id for e in executions if e.job_id}
    return job_ids - set(session.scalars(select(Job.job_id).where(Job.job_id.in_(job_ids))))


def decide_failed_runs(
    session: Session,
    executions: Iterable[Execution],
    now: dt.datetime,
    policy: Policy,
    defer_unknown_jobs: bool = False,
    *,
    leave_big: bool = False,
    prepared: Mapping[str, DecisionInput] | None = None,
) -> DecideResult:
    """Decide each failed run that has no decision yet.

    With `defer_unknown_jobs`, a failure of a job whose record respawn has not fetched yet is
    left undecided when the policy matches jobs by glob (the glob may be meant for the job's
    description); the background fetches the job and then decides (`decide_undecided`).

    With `leave_big`, a run naming more than `BIG_RUN_HOSTS` failed hosts is left undecided
    and named in the result, for `app.core.big_runs` to decide in two steps. `prepared`: the
    inputs that module read beforehand, by execution id (their single values are read again).
    """
    result = DecideResult()
    failed = [e for e in executions if e.status in FAILED_STATUSES]
    if not failed:
        return result
    keys = {auto_decision_key(e): e for e in failed}
    decided = set(
        session.scalars(select(Decision.decision_key).where(Decision.decision_key.in_(keys)))
    )
    unknown_jobs = _unknown_jobs(session, policy, failed, defer_unknown_jobs)
    todo: list[tuple[str, Execution]] = []
    for key, execution in keys.items():
        if key in decided:
            continue
        if execution.job_id in unknown_jobs:
            result.deferred += 1
        elif leave_big and len(execution.failed_hosts or ()) > BIG_RUN_HOSTS:
            result.big.append(execution.execution_id)
        else:
            todo.append((key, execution))
    if not todo:
        return result
    prepared = prepared or {}
    fresh = [e for _, e in todo if e.execution_id not in prepared]
    batch = read_batch(session, policy, fresh, now) if fresh else None
    lock_decisions(session)
    if batch is not None:
        read_sightings(session, policy, batch, now)
    for key, execution in todo:
        earlier = prepared.get(execution.execution_id)
        if earlier is None:
            inputs = decision_input(session, policy, execution, now, batch=batch)
        else:
            inputs = refreshed_input(session, policy, execution, earlier)
        decision = decide_restart(policy, inputs)
        stored = store_decision(session, execution, decision, key, now)
        if batch is not None:
            batch.decided(inputs)
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
