"""The notifier as the background runs it, on an app's runtime, on SQLite and PostgreSQL:
restarts sent and given up through the Runner simulator and told, a refused policy edit told
once, callbacks spooled while the database was away told once it is back, and the thread that
keeps going after errors."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from app.core.deliveries import parse_deliveries
from app.core.operator import pause_automatic
from app.db import utcnow
from app.dispatcher import notifier as notifier_module
from app.dispatcher.background import start_background
from app.dispatcher.notifier import Notifier
from app.extensions import get_runtime
from app.intake import intake as intake_module
from app.intake.spool import Spool
from app.models import Event, Notification
from app.simulator import SimulatorControl, SimulatorServer
from tests.conftest import CALLBACK_TOKEN
from tests.dispatcher.conftest import POLICY, discover, drain, failing_fleet, runner_settings
from tests.feed import event
from tests.helpers import transaction
from tests.notify.conftest import PUBLIC_URL, Receivers
from tests.notify.receivers import wait_for


def kinds(app: Flask) -> list[tuple[str, str]]:
    with transaction(app) as session:
        return [
            (n.kind, n.state)
            for n in session.scalars(select(Notification).order_by(Notification.id))
        ]


def events(app: Flask) -> int:
    with transaction(app) as session:
        return session.scalar(select(func.count()).select_from(Event)) or 0


def notifier(app: Flask) -> Notifier:
    return Notifier(get_runtime(app), name="test-notifier")


@pytest.fixture
def sim_app(
    make_app: Callable[..., Flask],
    policy_file: Path,
    sim: SimulatorServer,
    receivers: Receivers,
) -> Flask:
    policy_file.write_text(POLICY + receivers.notify_yaml())
    return make_app(public_url=PUBLIC_URL, max_send_attempts=2, **runner_settings(sim))


def test_a_restart_through_the_runner_is_told_with_its_answer(
    sim_app: Flask, control: SimulatorControl, receivers: Receivers
) -> None:
    (execution,) = failing_fleet(control, executions=1)
    discover(sim_app)

    drain(sim_app)
    assert notifier(sim_app).run_once() == 1

    (got,) = receivers.hook.unique()
    body = got.json
    assert body["type"] == "restart_sent"
    data = body["data"]
    assert data["execution_id"] == execution and data["account"] == "XXXX"
    assert data["job_description"] == "deploy tier 0"
    assert data["hosts"] == ["web0a"] and data["rule"] == "defaults"
    assert data["outcome"] == "restarted" and data["status_code"] == 200
    assert data["link"] == f"{PUBLIC_URL}/admin/executions/{execution}"
    assert kinds(sim_app) == [("restart_sent", "sent")]


def test_a_restart_the_runner_keeps_failing_is_told_once_given_up(
    sim_app: Flask, control: SimulatorControl, receivers: Receivers
) -> None:
    (execution,) = failing_fleet(control, executions=1)
    discover(sim_app)
    control.faults(fail_next=5, error_status=500, match="restart")

    drain(sim_app)
    assert notifier(sim_app).run_once() == 1

    (got,) = receivers.hook.unique()
    assert got.json["type"] == "restart_failed"
    assert got.json["data"]["execution_id"] == execution
    assert got.json["data"]["attempts"] == 2
    assert got.json["summary"].startswith(f"restart of {execution} failed: gave up after 2")


@pytest.fixture
def napp(make_app: Callable[..., Flask], policy_file: Path, receivers: Receivers) -> Flask:
    policy_file.write_text(POLICY + receivers.notify_yaml())
    return make_app(public_url=PUBLIC_URL)


def test_a_refused_policy_edit_is_told_once(
    napp: Flask, policy_file: Path, receivers: Receivers
) -> None:
    good = policy_file.read_text()
    policy_file.write_text(good + "  routes:\n    - {name: x, channels: [pager]}\n")

    assert notifier(napp).run_once() == 1
    assert notifier(napp).run_once() == 0  # another notifier of the process: told already

    (got,) = receivers.hook.unique()
    body = got.json
    assert body["type"] == "policy_refused"
    assert body["summary"].startswith("a policy edit was refused; policy ")
    (problem,) = body["data"]["problems"]
    assert problem.startswith(f"{policy_file}:")
    assert "no channel named 'pager'" in problem
    assert body["data"]["in_force"] != body["data"]["refused_version"]


def test_callbacks_spooled_while_the_database_was_away_are_told_once_it_is_back(
    make_app: Callable[..., Flask],
    policy_file: Path,
    receivers: Receivers,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    policy_file.write_text(POLICY + receivers.notify_yaml())
    app = make_app(callback_ack="durable", public_url=PUBLIC_URL)
    away = threading.Event()
    away.set()
    real_store = intake_module.store

    def store(*args: Any, **kwargs: Any) -> Any:
        if away.is_set():
            raise OperationalError("INSERT", {}, Exception("the database is away"))
        return real_store(*args, **kwargs)

    monkeypatch.setattr(intake_module, "store", store)
    items = [event("runner_on_ok", int(time.time() * 1000), f"web{n}") for n in range(3)]
    client = app.test_client()
    response = client.post(
        f"/callbacks/{CALLBACK_TOKEN}", data=json.dumps(items), content_type="application/json"
    )
    assert response.status_code == 202
    assert kinds(app) == []

    away.clear()
    wait_for(lambda: kinds(app), "the spooled callbacks told")

    assert kinds(app) == [("callbacks_spooled", "pending")]
    assert notifier(app).run_once() == 1
    (got,) = receivers.hook.unique()
    assert got.json["data"]["deliveries"] == 3
    assert got.json["summary"].startswith("3 callback deliveries were spooled while the database")


def test_the_spooled_notice_is_stored_with_the_replayed_callbacks_or_not_at_all(
    make_app: Callable[..., Flask],
    policy_file: Path,
    receivers: Receivers,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A replay that fails after its callbacks were inserted (here: queuing the notice)
    commits nothing: the callbacks stay spooled, and the next try stores them with the
    notice, so a crash between the two can never lose the notice."""
    policy_file.write_text(POLICY + receivers.notify_yaml())
    app = make_app(callback_ack="durable", public_url=PUBLIC_URL)
    away = threading.Event()
    away.set()
    real_store, real_notify = intake_module.store, intake_module.notify
    notice_fails = threading.Event()
    notice_fails.set()

    def store(*args: Any, **kwargs: Any) -> Any:
        if away.is_set():
            raise OperationalError("INSERT", {}, Exception("the database is away"))
        return real_store(*args, **kwargs)

    def notify(*args: Any, **kwargs: Any) -> Any:
        if notice_fails.is_set():
            raise OperationalError("INSERT", {}, Exception("the database went away again"))
        return real_notify(*args, **kwargs)

    monkeypatch.setattr(intake_module, "store", store)
    monkeypatch.setattr(intake_module, "notify", notify)
    items = [event("runner_on_ok", int(time.time() * 1000), f"web{n}") for n in range(2)]
    response = app.test_client().post(
        f"/callbacks/{CALLBACK_TOKEN}", data=json.dumps(items), content_type="application/json"
    )
    assert response.status_code == 202

    calls: list[int] = []
    monkeypatch.setattr(
        intake_module, "notify", lambda *a, **k: (calls.append(1), notify(*a, **k))[1]
    )
    away.clear()
    wait_for(lambda: len(calls) >= 2, "two replays tried")
    assert events(app) == 0 and kinds(app) == []

    notice_fails.clear()
    wait_for(lambda: kinds(app), "the spooled callbacks told")
    assert events(app) == 2
    assert kinds(app) == [("callbacks_spooled", "pending")]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_notifier_thread_sends_when_woken_and_outlives_errors(
    napp: Flask,
    receivers: Receivers,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    failures = [OperationalError("SELECT", {}, Exception("gone")), RuntimeError("boom")]
    real_claim = notifier_module.claim_due_notifications

    def claim(*args: Any, **kwargs: Any) -> Any:
        if failures:
            raise failures.pop(0)
        return real_claim(*args, **kwargs)

    monkeypatch.setattr(notifier_module, "claim_due_notifications", claim)
    runtime = get_runtime(napp)
    runner = Notifier(runtime, name="thread")
    stop = threading.Event()
    thread = threading.Thread(target=runner.run_forever, args=(stop,))
    with caplog.at_level(logging.INFO, logger="app.dispatcher.notifier"):
        thread.start()
        try:
            wait_for(lambda: not failures, "both errors met")
            with runtime.transaction() as session:
                pause_automatic(
                    session, None, "olivia", utcnow(), None, runtime.current_policy().policy
                )
            runner.wake()
            wait_for(lambda: receivers.hook.unique(), "the notification sent")
        finally:
            stop.set()
            runner.wake()
            thread.join(10)
    assert not thread.is_alive()
    messages = [r.getMessage() for r in caplog.records]
    assert "notifier: database error; retrying shortly" in messages
    assert "notifier: unexpected error; retrying shortly" in messages
    assert any(m.endswith("(paused) on oncall: sent") for m in messages)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_without_a_runner_the_background_still_notifies(napp: Flask, receivers: Receivers) -> None:
    runtime = get_runtime(napp)
    background = start_background(runtime)
    try:
        assert background.dispatchers == [] and background.reconciler is None
        with runtime.transaction() as session:
            pause_automatic(
                session, None, "olivia", utcnow(), None, runtime.current_policy().policy
            )
        background.wake()
        wait_for(lambda: receivers.hook.unique(), "the notification sent")
    finally:
        background.stop()
    assert kinds(napp) == [("paused", "sent")]


def test_callbacks_a_dead_process_spooled_are_told_once_another_stores_them(
    make_app: Callable[..., Flask], policy_file: Path, receivers: Receivers, tmp_path: Path
) -> None:
    policy_file.write_text(POLICY + receivers.notify_yaml())
    app = make_app(callback_ack="durable", public_url=PUBLIC_URL)
    # A process spooled two deliveries while the database was away, and died.
    dead = Spool(tmp_path / "spool")
    moment = int(time.time() * 1000)
    items = [event("runner_on_ok", moment, f"db{n}", event_id=f"orphan-{n}") for n in range(2)]
    dead.append(parse_deliveries(items, None, 500), utcnow())
    dead.close()

    # This process's intake starts with its first callback and takes the orphaned file over.
    response = app.test_client().post(
        f"/callbacks/{CALLBACK_TOKEN}",
        data=json.dumps([event("runner_on_ok", moment, "web1", event_id="live-1")]),
        content_type="application/json",
    )
    assert response.status_code == 202
    wait_for(lambda: events(app) == 3, "the orphaned deliveries stored")
    wait_for(lambda: kinds(app), "the orphaned deliveries told")

    assert kinds(app) == [("callbacks_spooled", "pending")]
    assert notifier(app).run_once() == 1
    (got,) = receivers.hook.unique()
    assert got.json["data"]["deliveries"] == 2
