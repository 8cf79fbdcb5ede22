"""A failed run naming thousands of hosts is decided in two steps, outside the transaction
that applied it (`app.core.big_runs`): callbacks are stored and applied while its inputs are
read, and what changes between the steps is seen by the second."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select, update

from app.core import big_runs as core_big_runs
from app.core.big_runs import decide_prepared, prepare, undecided_big_runs
from app.core.decision_inputs import BIG_RUN_HOSTS
from app.core.deliveries import parse_deliveries
from app.core.ingest import ingest_and_decide
from app.db import utcnow
from app.extensions import get_runtime
from app.intake import big_runs as intake_big_runs
from app.intake import intake as intake_module
from app.models import Decision, Execution, Restart
from tests.conftest import CALLBACK_TOKEN
from tests.feed import event
from tests.helpers import transaction

URL = f"/callbacks/{CALLBACK_TOKEN}"
HOSTS = BIG_RUN_HOSTS + 1
T0 = int(time.time() * 1000) - 60_000


def big_document(execution_id: str, hosts: int = HOSTS, job_id: str = "job-big") -> dict[str, Any]:
    return {
        "execution_id": execution_id,
        "job_id": job_id,
        "account_alias": "XXXX",
        "status": "FAILURE",
        "timers": [{"start": T0, "end": T0 + 30_000}],
        "failed_hosts": [f"host-{n:05d}" for n in range(hosts)],
    }


def apply(app: Flask, body: Any, leave_big: bool = True) -> Any:
    """Store, apply and decide a body in one transaction, as the intake does (nothing handed
    on)."""
    policy = get_runtime(app).current_policy().policy
    with transaction(app) as session:
        deliveries = parse_deliveries(body, None, 500)
        return ingest_and_decide(session, deliveries, utcnow(), policy, False, leave_big)


def two_steps(app: Flask, execution_id: str, between: Callable[[], None] = lambda: None) -> Any:
    policy = get_runtime(app).current_policy().policy
    now = utcnow()
    with transaction(app) as session:
        prepared = prepare(session, policy, execution_id, now, False)
    assert prepared is not None
    between()
    with transaction(app) as session:
        return decide_prepared(session, policy, prepared, now, False)


def decisions_of(app: Flask, execution_id: str) -> list[Decision]:
    with transaction(app) as session:
        return list(
            session.scalars(
                select(Decision)
                .join(Execution, Execution.id == Decision.execution_pk)
                .where(Execution.execution_id == execution_id)
            )
        )


def eventually(check: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)
    return found


def test_a_big_run_is_left_to_the_second_step_and_decided_there(app: Flask) -> None:
    applied = apply(app, big_document("exec-big"))
    small = apply(app, big_document("exec-small", hosts=BIG_RUN_HOSTS))

    assert applied.decided.big == ["exec-big"]
    assert decisions_of(app, "exec-big") == []
    assert small.decided.big == [] and small.decided.queued == 1  # at the limit: at once

    result = two_steps(app, "exec-big")

    assert result.queued == 1 and result.big == []
    (decision,) = decisions_of(app, "exec-big")
    assert decision.action == "restart" and len(decision.hosts) == HOSTS
    with transaction(app) as session:
        assert undecided_big_runs(session, utcnow()) == []


def test_without_leave_big_a_big_run_is_decided_at_once(app: Flask) -> None:
    """The reconciler and `respawn worker` decide as before, in one transaction."""
    applied = apply(app, big_document("exec-big"), leave_big=False)

    assert applied.decided.big == [] and applied.decided.queued == 1


def test_a_run_that_moved_between_the_steps_is_decided_from_what_it_is_now(app: Flask) -> None:
    apply(app, big_document("exec-big"))
    late = event(
        "runner_on_failed", T0 + 20_000, "late-host", execution_id="exec-big", job_id="job-big"
    )

    result = two_steps(app, "exec-big", between=lambda: apply(app, late))

    assert result.queued == 1
    (decision,) = decisions_of(app, "exec-big")
    assert "late-host" in decision.hosts and len(decision.hosts) == HOSTS + 1


def test_the_second_step_reads_the_budgets_again(app: Flask, policy_file: Path) -> None:
    policy_file.write_text(
        "version: 1\ndefaults:\n  backoff: {initial: 0s}\n"
        "limits:\n  global: {restarts: 1, window: 1h}\n"
    )
    get_runtime(app).current_policy()  # the edit is in force (re-read at once in tests)
    apply(app, big_document("exec-big"))

    # Between the steps another failure takes the fleet's only restart.
    result = two_steps(app, "exec-big", between=lambda: apply(app, big_document("x", hosts=2)))

    assert result.queued == 0
    (decision,) = decisions_of(app, "exec-big")
    assert decision.action == "skip" and decision.reason_code == "budget_global"


def test_nothing_is_prepared_for_a_run_decided_or_no_longer_failed(app: Flask) -> None:
    apply(app, big_document("exec-big"))
    two_steps(app, "exec-big")
    policy = get_runtime(app).current_policy().policy

    with transaction(app) as session:
        assert prepare(session, policy, "exec-big", utcnow(), False) is None
        assert prepare(session, policy, "exec-unknown", utcnow(), False) is None


def test_callbacks_are_stored_and_applied_while_a_big_run_is_read(
    make_app: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch, api_headers: dict[str, str]
) -> None:
    app = make_app(callback_ack="durable")
    client = app.test_client()
    reading = threading.Event()
    go_on = threading.Event()
    real_prepare = core_big_runs.prepare

    def held_prepare(*args: Any) -> Any:
        found = real_prepare(*args)
        reading.set()
        assert go_on.wait(60), "the test did not let the first step end"
        return found

    monkeypatch.setattr(intake_big_runs, "prepare", held_prepare)
    try:
        assert client.post(URL, json=big_document("exec-big")).status_code == 202
        assert reading.wait(30), "the big run was not handed to its thread"

        # Its first step is under way (its transaction open): a callback is still stored
        # and applied. Were that step holding SQLite's write lock, this would wait for it.
        small = event("runner_on_ok", T0, "web1", execution_id="exec-meanwhile")
        assert client.post(URL, json=small).status_code == 202
        eventually(
            lambda: (
                client.get("/api/v1/executions/exec-meanwhile", headers=api_headers).status_code
                == 200
            ),
            "the small callback to be applied",
        )
        assert decisions_of(app, "exec-big") == []
    finally:
        go_on.set()

    eventually(lambda: decisions_of(app, "exec-big"), "the big run's decision")
    with transaction(app) as session:
        assert session.scalar(select(func.count()).select_from(Restart)) == 1


def test_a_big_run_left_undecided_by_a_crash_is_decided_by_the_sweep(
    make_app: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_app(callback_ack="durable")
    apply(app, big_document("exec-orphan"))  # applied, then the process died
    with transaction(app) as session:
        session.execute(update(Execution).values(last_seen_at=Execution.first_seen_at))
    monkeypatch.setattr(intake_module, "SWEEP_SECONDS", 0.05)
    monkeypatch.setattr(intake_module, "LEFTOVER_AGE", intake_module.dt.timedelta(0))

    client = app.test_client()
    assert client.post(URL, json=event("runner_on_ok", T0, "web1", execution_id="o")).status_code
    eventually(lambda: decisions_of(app, "exec-orphan"), "the sweep to decide the big run")


def test_the_big_run_thread_outlives_a_failed_decision(
    make_app: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_app(callback_ack="durable")
    real_prepare = core_big_runs.prepare
    calls: list[str] = []

    def failing_once(session: Any, policy: Any, execution_id: str, *args: Any) -> Any:
        calls.append(execution_id)
        if len(calls) == 1:
            raise RuntimeError("the database went away")
        return real_prepare(session, policy, execution_id, *args)

    monkeypatch.setattr(intake_big_runs, "prepare", failing_once)
    monkeypatch.setattr(intake_module, "SWEEP_SECONDS", 0.05)
    monkeypatch.setattr(intake_module, "LEFTOVER_AGE", intake_module.dt.timedelta(0))
    client = app.test_client()

    assert client.post(URL, json=big_document("exec-first")).status_code == 202
    eventually(lambda: calls, "the first decision to be tried")
    assert client.post(URL, json=big_document("exec-second")).status_code == 202

    eventually(lambda: decisions_of(app, "exec-second"), "the next big run's decision")
    eventually(lambda: decisions_of(app, "exec-first"), "the sweep to decide the failed one")
