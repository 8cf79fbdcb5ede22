"""Error signatures in the record: which breakers are open, releasing the restarts they held,
and an operator closing one by hand (docs/policy.md, "Error-signature breaker").

A held restart is released once its signature's breaker has closed, in the order the
restarts were queued. Release decides again, with the policy of the moment: the restart goes
out if its deadline, budgets and the other gates still allow it (due at once, its backoff was
served while it waited, or at the end of a blackout), and is dropped with the reason otherwise.
Each release is recorded as a decision of its own (origin "release"), keyed by the restart,
so two dispatchers releasing at once cannot both do it.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import distinct, func, select
from sqlalchemy.orm import Session

from app import metrics
from app.core.decision_inputs import decision_input
from app.core.decisions import store_decision, tell_gave_up
from app.core.errors import NotFound, quoted
from app.core.history import sightings_for
from app.core.lifecycle import transition
from app.core.operator import record_audit
from app.db import lock_decisions
from app.models import Decision, Execution, FailureSignature, Restart, RestartState
from app.policy import (
    Policy,
    SignatureBreaker,
    SignatureState,
    decide_restart,
    signature_state,
)
from app.runner.documents import FAILED_STATUSES

log = logging.getLogger(__name__)

RELEASE_BATCH = 100
"""Held restarts looked at per pass."""


@dataclass(frozen=True)
class Released:
    released: int = 0
    dropped: int = 0


def _state(session: Session, policy: Policy, key: str, now: dt.datetime) -> SignatureState | None:
    """The signature's breaker now; None when the policy has no signature breaker."""
    breaker = policy.signature_breaker
    if breaker is None:
        return None
    return signature_state(breaker, sightings_for(session, breaker, key, now), now)


def any_held(session: Session) -> bool:
    return (
        session.scalar(select(Restart.id).where(Restart.state == RestartState.HELD).limit(1))
        is not None
    )


def release_held(
    session: Session, policy: Policy, now: dt.datetime, only: str | None = None
) -> Released:
    """Let go, in order, the held restarts whose signature's breaker has closed (all of them
    when the policy no longer has a signature breaker). Flushes; the caller commits."""
    query = select(Restart).where(Restart.state == RestartState.HELD)
    if only is not None:
        query = query.where(Restart.hold_signature == only)
    query = query.order_by(Restart.id).limit(RELEASE_BATCH)
    if session.scalars(query).first() is None:
        return Released(0, 0)
    # A release is decided again, against the same counts as a new decision; read the held
    # rows under the lock, as another process may have released some meanwhile.
    lock_decisions(session)
    held = list(session.scalars(query.execution_options(populate_existing=True)))
    closed: dict[str, bool] = {}
    released = dropped = 0
    for restart in held:
        key = restart.hold_signature or ""
        if key not in closed:
            state = _state(session, policy, key, now)
            closed[key] = state is None or not state.open
        if not closed[key]:
            continue
        if _release(session, policy, restart, now):
            released += 1
        else:
            dropped += 1
    if released or dropped:
        log.info("held restarts: %d released, %d dropped", released, dropped)
    return Released(released, dropped)


def _release(session: Session, policy: Policy, restart: Restart, now: dt.datetime) -> bool:
    """Decide the held restart again; True when it goes out."""
    execution = session.get_one(Execution, restart.execution_pk)
    key = f"release:{restart.id}"
    if execution.run_index != restart.run_index or execution.status not in FAILED_STATUSES:
        transition(restart, RestartState.NOT_NEEDED, now)
        restart.outcome = "superseded"
        restart.outcome_detail = (
            f"the execution moved on (run {execution.run_index + 1}, {execution.status}) "
            "while this restart was held"
        )
        restart.hold_signature = None
        return False
    fresh = decide_restart(policy, decision_input(session, policy, execution, now, restart))
    if fresh.restart:
        transition(restart, RestartState.PENDING, now)
        restart.hosts = list(fresh.hosts)
        # Its backoff was served while it waited; a blackout still defers it.
        due = fresh.due_at if fresh.deferred_by and fresh.due_at else max(restart.due_at, now)
        restart.due_at = due
        restart.outcome_detail = None
        reason = f"released: the signature's breaker closed; {fresh.reason}"
    else:
        transition(restart, RestartState.NOT_NEEDED, now)
        restart.outcome = "dropped"
        restart.outcome_detail = fresh.reason
        reason = f"dropped when released: {fresh.reason}"
    restart.hold_signature = None
    stored = store_decision(session, execution, fresh, key, now, origin="release")
    stored.decision.reason = reason
    tell_gave_up(session, policy, execution, fresh, stored.decision, now)
    metrics.HELD_RELEASED.labels(outcome="released" if fresh.restart else "dropped").inc()
    return fresh.restart


def close_signature(
    session: Session, key: str, actor: str, now: dt.datetime, policy: Policy
) -> tuple[FailureSignature, Released]:
    """An operator closes a signature's breaker: the failures so far no longer count, and the
    restarts it held are released (or dropped) now."""
    row = session.get(FailureSignature, key)
    if row is None:
        raise NotFound(f"no error signature {quoted(key)}")
    row.closed_at = now
    row.closed_by = actor
    record_audit(session, actor, "close_signature", key, now, {"text": row.text[:200]})
    session.flush()
    return row, release_held(session, policy, now, only=key)


# --- what the pages show ----------------------------------------------------------------------


@dataclass(frozen=True)
class SignatureView:
    key: str
    failure_class: str
    text: str
    state: SignatureState | None
    """None when the policy has no signature breaker."""
    executions: int
    jobs: tuple[str, ...]
    lookback: dt.timedelta
    """`executions` and `jobs` count the failed runs decided with the signature this far back:
    the breaker's window + cool_down, or the default breaker's when the policy has none."""
    held: int
    last_seen_at: dt.datetime
    closed_by: str | None

    @property
    def open(self) -> bool:
        return self.state is not None and self.state.open


def signature_view(
    session: Session, policy: Policy, key: str, now: dt.datetime
) -> SignatureView | None:
    row = session.get(FailureSignature, key)
    if row is None:
        return None
    return _view(session, policy, row, now)


def _view(
    session: Session, policy: Policy, row: FailureSignature, now: dt.datetime
) -> SignatureView:
    breaker = policy.signature_breaker
    counting = breaker or SignatureBreaker()
    sightings = sightings_for(session, counting, row.key, now)
    held = session.scalar(
        select(func.count())
        .select_from(Restart)
        .where(Restart.state == RestartState.HELD, Restart.hold_signature == row.key)
    )
    return SignatureView(
        key=row.key,
        failure_class=row.failure_class,
        text=row.text,
        state=signature_state(breaker, sightings, now) if breaker else None,
        executions=len({s.execution_id for s in sightings}),
        jobs=tuple(sorted({s.job_id for s in sightings})),
        lookback=counting.lookback,
        held=held or 0,
        last_seen_at=row.last_seen_at,
        closed_by=row.closed_by,
    )


def open_signatures(session: Session, policy: Policy, now: dt.datetime) -> list[SignatureView]:
    """Signatures whose breaker is open now, or that still hold restarts; busiest first."""
    breaker = policy.signature_breaker
    keys: set[str] = {
        key
        for key in session.scalars(
            select(Restart.hold_signature).where(Restart.state == RestartState.HELD).distinct()
        )
        if key
    }
    if breaker is not None:
        # Only signatures seen in enough executions can be open: the rest are not looked at.
        keys |= set(
            session.scalars(
                select(Decision.signature)
                .where(
                    Decision.signature.is_not(None),
                    Decision.origin == "policy",
                    Decision.created_at >= now - breaker.lookback,
                )
                .group_by(Decision.signature)
                .having(func.count(distinct(Decision.execution_pk)) >= breaker.executions)
            )
        )
    rows: Sequence[FailureSignature] = (
        list(session.scalars(select(FailureSignature).where(FailureSignature.key.in_(keys))))
        if keys
        else []
    )
    views = [_view(session, policy, row, now) for row in rows]
    shown = [v for v in views if v.open or v.held]
    return sorted(shown, key=lambda v: (-v.held, -v.executions, v.key))
