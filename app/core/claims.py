"""A claimed restart, and restarts claimed in the transaction that queues them.

A dispatcher claims a due restart in a transaction of its own (`app.core.outbox`). When the
process that decides a failure has a dispatcher waiting, the transaction that queues the
restart can claim it at once instead, for that process's dispatchers: the restart leaves
`pending` for `in_flight` under the same lease and with the same first attempt as a claim
would give it, and after the commit the process hands the claim to a dispatcher. That saves
a wake-up and a claim transaction on the way from a failure to its restart. If the process
dies before the call, the lease runs out and any dispatcher claims the restart again, then
verifies with the Runner before it sends (as after a dispatcher dies mid-call).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace

from sqlalchemy.orm import Session

from app.core.lifecycle import transition
from app.models import Execution, Restart, RestartAttempt, RestartState

_CLAIM_FOR = "respawn_claim_for"
_CLAIMED = "respawn_claimed"


@dataclass(frozen=True)
class ClaimedRestart:
    """A snapshot of a claimed outbox row: all the call needs, no ORM object."""

    restart_id: int
    attempt_id: int
    execution_id: str
    account: str
    job_id: str
    run_index: int
    hosts: tuple[str, ...]
    timers_before: int
    attempt: int
    lease_expires_at: dt.datetime
    worker: str = ""
    """Who holds the lease, when not the dispatcher that carries it out (a claim made where
    the restart was queued)."""


def claim_when_queued(session: Session, worker: str, lease_seconds: float) -> None:
    """Have this transaction claim the restarts it queues due now, for `worker`."""
    session.info[_CLAIM_FOR] = (session.get_transaction(), worker, lease_seconds)
    session.info[_CLAIMED] = []


def claimed_when_queued(session: Session) -> list[ClaimedRestart]:
    """The claims this transaction made as it queued restarts (hand them on once it has
    committed)."""
    return list(session.info.get(_CLAIMED, ()))


def claim_queued(
    session: Session, restart: Restart, execution: Execution, now: dt.datetime
) -> bool:
    """Claim a restart just queued (added, not flushed yet: it is inserted claimed), due now,
    if the transaction was asked to; flush. False when it was not (nothing flushed): the
    restart waits in `pending` for a dispatcher's claim."""
    wanted = session.info.get(_CLAIM_FOR)
    if wanted is None or wanted[0] is not session.get_transaction():
        return False
    _, worker, lease_seconds = wanted
    lease_until = now + dt.timedelta(seconds=lease_seconds)
    transition(restart, RestartState.IN_FLIGHT, now)
    restart.lease_owner = worker
    restart.lease_expires_at = lease_until
    restart.attempts = 1
    session.flush()
    claim = start_attempt(session, restart, execution, worker, lease_until, now)
    session.info[_CLAIMED].append(replace(claim, worker=worker))
    return True


def start_attempt(
    session: Session,
    restart: Restart,
    execution: Execution,
    worker: str,
    lease_until: dt.datetime,
    now: dt.datetime,
) -> ClaimedRestart:
    """Open the attempt of a restart just claimed for `worker` until `lease_until` (its
    attempt count already set) and take the claim's snapshot; flush."""
    attempt = RestartAttempt(
        restart_id=restart.id, worker=worker, started_at=now, outcome="started"
    )
    session.add(attempt)
    session.flush()
    return ClaimedRestart(
        restart_id=restart.id,
        attempt_id=attempt.id,
        execution_id=execution.execution_id,
        account=execution.account_alias,
        job_id=execution.job_id,
        run_index=restart.run_index,
        hosts=tuple(restart.hosts),
        timers_before=restart.timers_before,
        attempt=restart.attempts,
        lease_expires_at=lease_until,
    )
