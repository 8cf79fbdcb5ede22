"""A restart claimed in the transaction that decides it (app/core/claims.py): while one of the
process's dispatchers waits, the failure's transaction takes the lease, and the dispatcher
calls the Runner without a claim of its own; a claim that is never carried out (its process
died) is claimed again once its lease ran out, and the restart still goes exactly once."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from flask import Flask
from sqlalchemy import select

from app.core.claims import ClaimedRestart
from app.dispatcher import Background
from app.extensions import get_runtime, get_settings
from app.models import Restart, RestartAttempt
from app.simulator import SimulatorControl, SimulatorServer
from tests.dispatcher.conftest import (
    ACCOUNT,
    POLICY,
    drain,
    restart_states,
    runner_client,
    runner_settings,
    serve,
    wait_until,
)
from tests.helpers import transaction


@contextmanager
def background(
    app: Flask, idle: bool, hand: Callable[[list[ClaimedRestart]], None] | None = None
) -> Iterator[Background]:
    """One dispatcher attached to the app's runtime as `start_background` attaches it, its
    thread not started: the test runs it. `idle`: waiting for work, as between passes;
    `hand`: where the claims made as restarts are queued go (the background's own)."""
    runtime = get_runtime(app)
    made = Background(runtime, runner_client(app), dispatchers=1, reconcile=False)
    made.dispatchers[0].idle = idle
    runtime.attach_background(made.wake, made.stop, made.claim_for, hand or made.hand)
    yield made


def fail_one(control: SimulatorControl, callback_url: str) -> str:
    """One execution that fails on one host; its callbacks go to `callback_url`."""
    created = control.fleet(
        {
            "account": ACCOUNT,
            "callbacks": [{"url": callback_url, "level": "DEBUG"}],
            "jobs": [{"description": "deploy", "hosts": {"web1": "fail", "web2": "ok"}}],
        }
    )
    control.advance_until_idle()
    (execution_id,) = created["jobs"][0]["executions"]
    return str(execution_id)


def decided(app: Flask) -> Callable[[], bool]:
    def check() -> bool:
        with transaction(app) as session:
            return session.scalar(select(Restart.id)) is not None

    return check


def attempts(app: Flask) -> list[tuple[str, str]]:
    with transaction(app) as session:
        rows = session.execute(
            select(RestartAttempt.worker, RestartAttempt.outcome).order_by(RestartAttempt.id)
        )
        return [(worker, outcome) for worker, outcome in rows]


def test_a_failure_decided_while_a_dispatcher_waits_is_claimed_as_it_is_queued(
    rapp: Flask, control: SimulatorControl, callback_url: str
) -> None:
    with background(rapp, idle=True) as made:
        execution_id = fail_one(control, callback_url)
        wait_until(decided(rapp), 30)
        wait_until(lambda: len(made.handed) == 1, 10)

        with transaction(rapp) as session:
            restart = session.scalars(select(Restart)).one()
            assert (restart.state, restart.lease_owner, restart.attempts) == (
                "in_flight",
                made.claimer,
                1,
            )
        assert attempts(rapp) == [(made.claimer, "started")]
        (handed,) = made.handed
        assert (handed.execution_id, handed.attempt, handed.worker) == (
            execution_id,
            1,
            made.claimer,
        )
        dispatcher = made.dispatchers[0]
        assert dispatcher._wake.is_set()  # the hand-off woke it

        assert dispatcher.run_once() == 1

    assert restart_states(rapp) == [("done", "restarted", 1)]
    assert attempts(rapp) == [(made.claimer, "restarted")]
    calls = control.calls()["restart"]["by_execution"][execution_id]
    assert calls == {"received": 1, "applied": 1}


def test_without_a_waiting_dispatcher_the_restart_waits_for_a_claim(
    rapp: Flask, control: SimulatorControl, callback_url: str
) -> None:
    """Every dispatcher busy: claiming now would start the lease with no one to use it."""
    with background(rapp, idle=False) as made:
        fail_one(control, callback_url)
        wait_until(decided(rapp), 30)
        assert restart_states(rapp) == [("pending", None, 0)]
        assert not made.handed


def test_a_claim_never_carried_out_is_claimed_again_once_its_lease_ran_out(
    make_app: Callable[..., Flask],
    policy_file: Path,
    sim: SimulatorServer,
    control: SimulatorControl,
) -> None:
    """Its process died between the commit and the call: the restart is not lost, and it is
    not sent twice (the next claim asks the Runner first)."""
    policy_file.write_text(POLICY)
    app = make_app(
        **runner_settings(
            sim, lease_seconds=2.0, runner_connect_timeout=0.5, runner_read_timeout=1.0
        )
    )
    gone = background(app, idle=True, hand=lambda claims: None)  # gone with its process
    with serve(app) as callback_url, gone:
        execution_id = fail_one(control, callback_url)
        wait_until(decided(app), 30)
        assert restart_states(app) == [("in_flight", None, 1)]

        time.sleep(get_settings(app).lease_seconds + 0.1)
        drain(app)

    assert restart_states(app) == [("done", "restarted", 2)]
    assert [outcome for _, outcome in attempts(app)] == ["interrupted", "restarted"]
    calls = control.calls()["restart"]["by_execution"][execution_id]
    assert calls == {"received": 1, "applied": 1}
