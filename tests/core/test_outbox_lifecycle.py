"""The restart lifecycle: every allowed move works, every other one raises."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest

from app.core.errors import Conflict
from app.core.outbox import FINAL_STATES, TRANSITIONS, IllegalTransition, cancel, transition
from app.models import Restart, RestartState

NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
PAIRS = list(itertools.product(RestartState, RestartState))


def restart_in(state: RestartState) -> Restart:
    return Restart(id=1, state=state, lease_owner="w", lease_expires_at=NOW)


@pytest.mark.parametrize(("start", "end"), PAIRS)
def test_a_transition_is_allowed_exactly_when_the_table_says(
    start: RestartState, end: RestartState
) -> None:
    restart = restart_in(start)
    if end in TRANSITIONS[start]:
        transition(restart, end, NOW)
        assert restart.state == end
        assert restart.updated_at == NOW
        assert (restart.completed_at == NOW) == (end in FINAL_STATES)
        assert (restart.lease_owner is None) == (end != RestartState.IN_FLIGHT)
    else:
        with pytest.raises(IllegalTransition):
            transition(restart, end, NOW)
        assert restart.state == start


def test_final_states_are_final_and_every_state_is_reachable() -> None:
    assert all(not TRANSITIONS[state] for state in FINAL_STATES)
    reached = {RestartState.PENDING}
    frontier = [RestartState.PENDING]
    while frontier:
        for nxt in TRANSITIONS[frontier.pop()]:
            if nxt not in reached:
                reached.add(nxt)
                frontier.append(nxt)
    assert reached == set(RestartState)


@pytest.mark.parametrize("state", [RestartState.PENDING, RestartState.HELD])
def test_a_pending_or_held_restart_can_be_cancelled(state: RestartState) -> None:
    waiting = restart_in(state)
    cancel(waiting, "alice", NOW)
    assert (waiting.state, waiting.cancelled_by, waiting.outcome) == (
        RestartState.CANCELLED,
        "alice",
        "cancelled",
    )


def test_only_a_pending_or_held_restart_can_be_cancelled() -> None:
    for state in set(RestartState) - {RestartState.PENDING, RestartState.HELD}:
        with pytest.raises(Conflict) as raised:
            cancel(restart_in(state), "alice", NOW)
        assert raised.value.code == "not_pending"
