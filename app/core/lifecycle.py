"""The restart lifecycle: which states an outbox row may move between, and the one function
that moves it.

pending → in_flight → done | failed | not_needed | pending (a retry); pending → cancelled |
not_needed; pending → held when its error signature's breaker opens, and held → pending
(released) | not_needed (dropped, or superseded) | cancelled.
"""

from __future__ import annotations

import datetime as dt

from app.core.errors import Conflict
from app.models import Restart, RestartState

FINAL_STATES = frozenset(
    {RestartState.DONE, RestartState.FAILED, RestartState.NOT_NEEDED, RestartState.CANCELLED}
)
TRANSITIONS: dict[RestartState, frozenset[RestartState]] = {
    # Claimed by a dispatcher; cancelled by an operator; settled unsent when superseded.
    RestartState.PENDING: frozenset(
        {
            RestartState.IN_FLIGHT,
            RestartState.HELD,
            RestartState.CANCELLED,
            RestartState.NOT_NEEDED,
        }
    ),
    # Its signature's breaker closed (released, or dropped past its deadline or budget);
    # cancelled by an operator; settled unsent when superseded.
    RestartState.HELD: frozenset(
        {RestartState.PENDING, RestartState.CANCELLED, RestartState.NOT_NEEDED}
    ),
    # The answer recorded (or a retry scheduled); claimed again once its lease expired.
    RestartState.IN_FLIGHT: frozenset(
        {
            RestartState.IN_FLIGHT,
            RestartState.PENDING,
            RestartState.DONE,
            RestartState.FAILED,
            RestartState.NOT_NEEDED,
        }
    ),
    **{state: frozenset() for state in FINAL_STATES},
}


class IllegalTransition(RuntimeError):
    """A restart was asked to move where its lifecycle does not go (a bug, never input)."""


def transition(restart: Restart, to: RestartState, now: dt.datetime) -> None:
    """Move `restart` to state `to`; raises IllegalTransition if the lifecycle forbids it."""
    current = RestartState(restart.state)
    if to not in TRANSITIONS[current]:
        raise IllegalTransition(f"restart {restart.id}: {current} -> {to} is not allowed")
    restart.state = to
    restart.updated_at = now
    if to in FINAL_STATES:
        restart.completed_at = now
    if to != RestartState.IN_FLIGHT:
        restart.lease_owner = None
        restart.lease_expires_at = None


def cancel(restart: Restart, actor: str, now: dt.datetime) -> None:
    """An operator cancels a restart before it is sent (Conflict once it is past pending or
    held)."""
    if restart.state not in (RestartState.PENDING, RestartState.HELD):
        raise Conflict(
            f"restart is {restart.state}; only a pending or held restart can be cancelled",
            code="not_pending",
        )
    transition(restart, RestartState.CANCELLED, now)
    restart.cancelled_by = actor
    restart.outcome = "cancelled"
    restart.outcome_detail = f"cancelled by {actor}"
