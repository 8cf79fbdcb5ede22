"""The outbox of restarts: its lifecycle, claims under a lease, the call, the recorded answer.

The outbox row of a decision (`restarts`) moves as `app.core.lifecycle` allows. Every change
of state goes through `transition` (or, for the claim, the one conditional UPDATE that
implements the same rule), and an illegal one raises. Each step is its own short
transaction, and the Runner is called only between them, never while a transaction is open.

Exactly once: a claim takes a lease; if its holder dies mid-call the lease expires and the
next claimer, before sending again, asks the Runner for the execution and re-sends only if
the restart did not take effect (still failed, no new timer). Any attempt after the first
is verified the same way, since a timed-out or 5xx call may have been applied.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import and_, exists, or_, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from app import metrics
from app.core.claims import ClaimedRestart, start_attempt
from app.core.ingest import advance_to_run, record_answer
from app.core.insights import record_restart_sent
from app.core.lifecycle import FINAL_STATES, TRANSITIONS, IllegalTransition, cancel, transition
from app.core.notifications import Notice, notify
from app.db import locked
from app.models import Decision, Execution, Job, Pause, Restart, RestartAttempt, RestartState
from app.policy import Policy
from app.redact import redact_text
from app.runner.client import RunnerClient
from app.runner.documents import FAILED_STATUSES, ExecutionDocument
from app.runner.errors import (
    RunnerAuthError,
    RunnerError,
    RunnerNotFound,
    RunnerRejected,
    RunnerTimeout,
    RunnerUnavailable,
)
from app.runner.keys import KeyFileError, resolve_keys

__all__ = [
    "FINAL_STATES",
    "TRANSITIONS",
    "CallResult",
    "ClaimedRestart",
    "Claims",
    "IllegalTransition",
    "RetryPolicy",
    "cancel",
    "claim_due_restarts",
    "record_result",
    "send_restart",
    "transition",
]

log = logging.getLogger(__name__)

MAX_DETAIL = 500

# --- claims -----------------------------------------------------------------------------------


Verdict = Literal["done", "not_needed", "failed", "retry"]
"""Where a call leaves its restart: one of the final states, or "retry" (pending again, or
failed once the attempts are used up)."""


@dataclass(frozen=True)
class CallResult:
    """What one attempt came to, decided outside any transaction."""

    outcome: str
    # done: restarted | already_restarted; not_needed: no_longer_failed | gone;
    # failed: rejected; retry: unavailable | timeout | bad_response | auth_failed | key_error
    state: Verdict
    status_code: int | None
    detail: str
    document: ExecutionDocument | None = None
    # The request may have reached the Runner and no definite answer came back.
    uncertain: bool = False


def _due_clause(now: dt.datetime) -> Any:
    """Rows a claim may take: due pending ones, and in-flight ones whose holder's lease ran
    out (the two ways into in_flight that TRANSITIONS allows)."""
    return or_(
        and_(Restart.state == RestartState.PENDING, Restart.due_at <= now),
        and_(Restart.state == RestartState.IN_FLIGHT, Restart.lease_expires_at < now),
    )


def _not_paused() -> Any:
    """Automatic restarts of a paused job (or with a global pause) wait; manual ones go, and
    so does a row whose holder died mid-call (it must be verified and settled)."""
    paused = exists().where(or_(Pause.job_id == "", Pause.job_id == Execution.job_id))
    return or_(Restart.manual.is_(True), Restart.state == RestartState.IN_FLIGHT, ~paused)


class Claims(list[ClaimedRestart]):
    """The restarts a claim took; `more`: another one was due beside them."""

    more: bool = False


def claim_due_restarts(
    session: Session, worker: str, now: dt.datetime, lease_seconds: float, limit: int
) -> Claims:
    """Claim up to `limit` due restarts for `worker`; flush, the caller commits. One more
    is looked at, not claimed, to tell whether another dispatcher has work (`more`)."""
    query = (
        select(Restart, Execution)
        .join(Execution, Execution.id == Restart.execution_pk)
        .where(_due_clause(now), _not_paused())
        .order_by(Restart.due_at, Restart.id)
        .limit(limit + 1)
        .execution_options(populate_existing=True)
    )
    candidates = session.execute(locked(session, query, of=Restart, skip_locked=True)).all()
    claimed = Claims()
    claimed.more = len(candidates) > limit
    lease_until = now + dt.timedelta(seconds=lease_seconds)
    for restart, execution in candidates[:limit]:
        # The conditional update is the claim on SQLite (and a no-op guard on PostgreSQL,
        # where the row is already locked): it only succeeds while the row is still due.
        result = session.execute(
            update(Restart)
            .where(Restart.id == restart.id, _due_clause(now))
            .values(
                state=RestartState.IN_FLIGHT,
                lease_owner=worker,
                lease_expires_at=lease_until,
                attempts=Restart.attempts + 1,
                updated_at=now,
            )
            .execution_options(synchronize_session=False)
        )
        if getattr(result, "rowcount", 0) != 1:
            continue
        _as_claimed(restart, worker, lease_until, now)
        if restart.attempts == 1 and _superseded(restart, execution, now):
            continue
        if restart.attempts > 1:
            # An attempt left "started" belongs to a holder that died mid-call (a first
            # claim has no attempt before it).
            session.execute(
                update(RestartAttempt)
                .where(RestartAttempt.restart_id == restart.id, RestartAttempt.outcome == "started")
                .values(outcome="interrupted", finished_at=now, detail="lease expired mid-call")
            )
        claimed.append(start_attempt(session, restart, execution, worker, lease_until, now))
    return claimed


def _as_claimed(restart: Restart, worker: str, lease_until: dt.datetime, now: dt.datetime) -> None:
    """Make the loaded row say what the claim's UPDATE wrote, as if read back (not dirty):
    its values were read under the claim's lock (FOR UPDATE; SQLite's write lock), so a
    second read would only cost a statement."""
    for key, value in (
        ("state", RestartState.IN_FLIGHT),
        ("lease_owner", worker),
        ("lease_expires_at", lease_until),
        ("attempts", restart.attempts + 1),
        ("updated_at", now),
    ):
        set_committed_value(restart, key, value)


def _superseded(restart: Restart, execution: Execution, now: dt.datetime) -> bool:
    """Settle, unsent, a restart whose run is no longer the execution's failed current run
    (restarted some other way meanwhile); True when it was settled."""
    if execution.run_index == restart.run_index and execution.status in FAILED_STATUSES:
        return False
    transition(restart, RestartState.NOT_NEEDED, now)
    restart.outcome = "superseded"
    restart.outcome_detail = (
        f"the execution moved on (run {execution.run_index + 1}, {execution.status}) "
        "before this restart was sent"
    )
    return True


def _took_effect(claim: ClaimedRestart, document: ExecutionDocument) -> bool:
    """A restart took effect when the execution is no longer failed or has a new timer."""
    return document.status not in FAILED_STATUSES or len(document.timers) > claim.timers_before


def _short(text: str) -> str:
    return redact_text(text)[:MAX_DETAIL]


def _after_refusal(client: RunnerClient, claim: ClaimedRestart, error: RunnerError) -> CallResult:
    """400/404/409: find out from the Runner why the restart was refused."""
    try:
        document = client.lookup_execution(claim.account, claim.job_id, claim.execution_id)
    except RunnerNotFound:
        return CallResult("gone", "not_needed", error.status_code, "execution no longer exists")
    except RunnerError as exc:
        return CallResult(
            "rejected",
            "failed",
            error.status_code,
            _short(f"{error.message}; checking the execution failed too: {exc.message}"),
        )
    if len(document.timers) > claim.timers_before:
        return CallResult(
            "already_restarted",
            "not_needed",
            error.status_code,
            "the execution was already restarted",
            document,
        )
    if document.status not in FAILED_STATUSES:
        return CallResult(
            "no_longer_failed",
            "not_needed",
            error.status_code,
            f"the execution is {document.status}",
            document,
        )
    return CallResult("rejected", "failed", error.status_code, _short(error.message), document)


def send_restart(
    client: RunnerClient,
    claim: ClaimedRestart,
    ssh_keys_file: str | None,
    call_budget_seconds: float,
    clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
) -> CallResult:
    """Check the execution, then call the Runner's restart endpoint. No database here.

    The Runner is asked first, every time (one GET): an earlier attempt, a dead holder's call
    or someone else may have restarted it already. The POST only leaves while the lease still
    has `call_budget_seconds` (connect + read timeouts) left, so it ends, one way or the
    other, before anyone else may claim the row.
    """
    try:
        client.ensure_token()
        document = client.lookup_execution(claim.account, claim.job_id, claim.execution_id)
    except RunnerNotFound:
        return CallResult("gone", "not_needed", 404, "execution no longer exists")
    except RunnerError as exc:
        return _retry_result(exc)
    if _took_effect(claim, document):
        if claim.attempt > 1:
            return CallResult(
                "already_restarted", "done", None, "an earlier attempt had taken effect", document
            )
        return CallResult(
            "already_restarted",
            "not_needed",
            None,
            f"the execution was restarted some other way ({document.status})",
            document,
        )
    try:
        keys = resolve_keys(ssh_keys_file, claim.hosts)
    except KeyFileError as exc:
        return CallResult("key_error", "retry", None, _short(str(exc)))
    spare = (claim.lease_expires_at - clock()).total_seconds() - call_budget_seconds
    if spare <= 0:
        return CallResult("lease_expiring", "retry", None, "too little of the lease left; not sent")
    try:
        document = client.restart(
            claim.account,
            claim.job_id,
            claim.execution_id,
            hosts=keys.hosts or None,
            ssh_private_key=keys.default_key,
            send_by=time.monotonic() + spare,
        )
    except (RunnerRejected, RunnerNotFound) as exc:
        return _after_refusal(client, claim, exc)
    except RunnerError as exc:
        return _retry_result(exc)
    return CallResult("restarted", "done", 200, f"execution is {document.status}", document)


# Answers that say nothing about whether the request was carried out (a proxy's 502/504).
_UNCLEAR_STATUSES = frozenset({502, 504})


def _retry_result(exc: RunnerError) -> CallResult:
    outcome = "auth_failed" if isinstance(exc, RunnerAuthError) else exc.kind
    uncertain = isinstance(exc, RunnerTimeout) or (
        isinstance(exc, RunnerUnavailable)
        and exc.sent
        and (exc.status_code is None or exc.status_code in _UNCLEAR_STATUSES)
    )
    return CallResult(outcome, "retry", exc.status_code, _short(str(exc)), uncertain=uncertain)


def retry_delay(attempt: int, base_seconds: float, max_seconds: float = 300.0) -> float:
    return float(min(max_seconds, base_seconds * 2 ** max(0, attempt - 1)))


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int
    base_seconds: float
    # After a call whose fate is unknown (no answer in time), wait at least this long, so
    # that a Runner still working on it has applied it before we look and maybe send again.
    uncertain_seconds: float


def record_result(
    session: Session,
    claim: ClaimedRestart,
    worker: str,
    result: CallResult,
    now: dt.datetime,
    retry: RetryPolicy,
    policy: Policy | None = None,
) -> RestartState:
    """Store the attempt and move the outbox row on; returns the row's new state. With the
    policy, tell its notification channels a restart was sent or failed for good."""
    session.execute(
        update(RestartAttempt)
        .where(RestartAttempt.id == claim.attempt_id)
        .values(
            finished_at=now,
            status_code=result.status_code,
            outcome=result.outcome,
            detail=result.detail,
        )
        .execution_options(synchronize_session=False)
    )
    restart = session.scalars(
        locked(session, select(Restart).where(Restart.id == claim.restart_id))
    ).one()
    metrics.RESTART_CALLS.labels(outcome=result.outcome).inc()
    if restart.state != RestartState.IN_FLIGHT or restart.lease_owner != worker:
        # The lease expired and another worker took over; it verifies before it sends.
        log.warning("restart id %s: lease lost before the answer was recorded", restart.id)
        return RestartState(restart.state)
    restart.outcome = result.outcome
    restart.outcome_detail = result.detail
    if result.state == "retry":
        if claim.attempt >= retry.max_attempts:
            transition(restart, RestartState.FAILED, now)
            restart.outcome = "gave_up"
            restart.outcome_detail = _short(
                f"gave up after {claim.attempt} attempts; last: {result.outcome}: {result.detail}"
            )
            metrics.RESTARTS_GIVEN_UP.inc()
            log.error(
                "restart id %s of %s: gave up after %s attempts (%s)",
                restart.id,
                claim.execution_id,
                claim.attempt,
                result.outcome,
            )
            if policy is not None:
                _tell(session, policy, restart, claim, "restart_failed", result, now)
        else:
            delay = retry_delay(claim.attempt, retry.base_seconds)
            if result.uncertain:
                delay = max(delay, retry.uncertain_seconds)
            transition(restart, RestartState.PENDING, now)
            restart.due_at = now + dt.timedelta(seconds=delay)
        return RestartState(restart.state)
    state = RestartState(result.state)
    transition(restart, state, now)
    if state == RestartState.DONE:
        restart.sent_at = restart.sent_at or now
        record_restart_sent(session, restart)
    if state == RestartState.DONE or result.document is not None:
        execution = _locked_execution(session, restart.execution_pk)
        if execution is not None:
            _record_answer(session, execution, claim, state, result.document, now)
    if policy is not None and state in (RestartState.DONE, RestartState.FAILED):
        kind = "restart_sent" if state == RestartState.DONE else "restart_failed"
        _tell(session, policy, restart, claim, kind, result, now)
    return RestartState(restart.state)


def _tell(
    session: Session,
    policy: Policy,
    restart: Restart,
    claim: ClaimedRestart,
    kind: str,
    result: CallResult,
    now: dt.datetime,
) -> None:
    if not policy.notify.enabled:
        return  # `notify` would drop it: spare the reads that describe it
    execution = session.get(Execution, restart.execution_pk)
    decision = session.get(Decision, restart.decision_id)
    job = session.get(Job, claim.job_id) if claim.job_id else None
    hosts = ", ".join(claim.hosts) if claim.hosts else "no host list"
    if kind == "restart_sent":
        summary = f"restarted {claim.execution_id} ({hosts}): {result.detail or result.outcome}"
    else:
        summary = f"restart of {claim.execution_id} failed: {restart.outcome_detail or ''}"
    notify(
        session,
        policy,
        Notice(
            kind=kind,
            key=f"{kind}:restart:{restart.id}",
            summary=summary[:500],
            execution=execution,
            job_id=claim.job_id,
            job_description=job.description if job is not None else None,
            account=claim.account,
            hosts=claim.hosts,
            rule=decision.rule if decision is not None else None,
            reason=decision.reason if decision is not None else None,
            details={
                "restart_id": restart.id,
                "manual": restart.manual,
                "attempts": claim.attempt,
                "outcome": restart.outcome,
                "status_code": result.status_code,
                "runner_answer": _short(result.detail),
            },
        ),
        now,
    )


def _locked_execution(session: Session, execution_pk: int) -> Execution | None:
    """The execution, read afresh and locked: callbacks may have moved it on meanwhile."""
    query = (
        select(Execution)
        .where(Execution.id == execution_pk)
        .execution_options(populate_existing=True)
    )
    return session.scalars(locked(session, query)).one_or_none()


def _record_answer(
    session: Session,
    execution: Execution,
    claim: ClaimedRestart,
    state: RestartState,
    document: ExecutionDocument | None,
    now: dt.datetime,
) -> None:
    """Record the Runner's answer on the locked execution; once a restart was accepted, the
    execution is PENDING in its next run (or further)."""
    if document is not None:
        record_answer(session, execution, document, now)
    if state != RestartState.DONE:
        return
    execution.restart_count += 1
    if execution.run_index <= claim.run_index:
        advance_to_run(session, execution, claim.run_index + 1, "PENDING", now)
