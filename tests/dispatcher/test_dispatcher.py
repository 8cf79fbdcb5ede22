"""The dispatcher and reconciler against the Runner simulator over real HTTP, on both databases.

Exactly once under races, crashes (SIGKILL mid-call) and every Runner fault; lost callbacks
still found; SSH keys never leak.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
from flask import Flask
from sqlalchemy import func, select, text

from app.dispatcher import Dispatcher, Reconciler
from app.extensions import get_runtime, get_settings
from app.models import Decision, Restart, RestartAttempt
from app.runner import RunnerClient
from app.runner.factory import make_runner_client
from app.simulator import SimulatorControl, SimulatorServer
from tests.conftest import CALLBACK_TOKEN
from tests.dispatcher.conftest import (
    ACCOUNT,
    PASSWORD,
    POLICY,
    PROJECT,
    USER,
    discover,
    drain,
    failing_fleet,
    restart_states,
    runner_settings,
    wait_until,
)
from tests.helpers import transaction

pytestmark = pytest.mark.slow


def worker_env(
    app: Flask, database_url: str, policy_file: Path, sim: SimulatorServer, **extra: str
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RESPAWN_")}
    env.update(
        RESPAWN_DATABASE_URL=database_url,
        RESPAWN_SECRET_KEY="worker-test-secret-key-0123456789abcdef",
        RESPAWN_CALLBACK_TOKENS=CALLBACK_TOKEN,
        RESPAWN_POLICY_FILE=str(policy_file),
        RESPAWN_RUNNER_API_URL=sim.url,
        RESPAWN_RUNNER_AUTH_URL=sim.auth_url,
        RESPAWN_RUNNER_USERNAME=USER,
        RESPAWN_RUNNER_PASSWORD=PASSWORD,
        RESPAWN_DISPATCH_INTERVAL="0.05",
        RESPAWN_RETRY_BASE_SECONDS="0.01",
        RESPAWN_LEASE_SECONDS="4",
        RESPAWN_RUNNER_CONNECT_TIMEOUT="1",
        RESPAWN_RUNNER_READ_TIMEOUT="2.5",
        RESPAWN_LOG_LEVEL="INFO",
        PYTHONPATH=str(PROJECT),
        PYTHONUNBUFFERED="1",  # its "respawn worker: ..." line reaches the log at once
    )
    env.update(extra)
    return env


def spawn_worker(env: dict[str, str], log: Path, dispatchers: int = 1) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "app.cli",
                "worker",
                "--dispatchers",
                str(dispatchers),
                "--no-reconcile",
            ],
            cwd=PROJECT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def settled(app: Flask, total: int) -> Callable[[], bool]:
    def check() -> bool:
        with transaction(app) as session:
            finished = session.scalar(
                select(func.count())
                .select_from(Restart)
                .where(Restart.state.in_(("done", "not_needed", "failed")))
            )
        return finished == total

    return check


@pytest.mark.timeout(240)  # about 15 s idle; a loaded machine has taken several times that
def test_threads_and_worker_processes_race_to_exactly_one_call_each(
    rapp: Flask,
    control: SimulatorControl,
    sim: SimulatorServer,
    database_url: str,
    policy_file: Path,
    tmp_path: Path,
) -> None:
    executions = failing_fleet(control, executions=30, jobs=4)
    assert len(executions) == 120
    assert discover(rapp) == 120
    client = make_runner_client(get_settings(rapp))
    assert client is not None
    stop = threading.Event()
    dispatchers = [Dispatcher(get_runtime(rapp), client, name=f"thread-{n}") for n in range(4)]
    threads = [threading.Thread(target=d.run_forever, args=(stop,)) for d in dispatchers]
    env = worker_env(rapp, database_url, policy_file, sim)
    logs = [tmp_path / f"worker{n}.log" for n in range(2)]
    workers = [spawn_worker(env, log) for log in logs]
    try:
        # The threads wait for both workers to be dispatching: on a loaded machine a worker
        # can take longer to start than the threads take to send all 120 restarts.
        wait_until(lambda: all("respawn worker:" in log.read_text() for log in logs), timeout=60)
        for thread in threads:
            thread.start()
        wait_until(settled(rapp, 120), timeout=180)
    finally:
        stop.set()
        for dispatcher in dispatchers:
            dispatcher.wake()
        for thread in threads:
            thread.join(10)
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
            worker.wait(20)

    calls = control.calls()["restart"]
    assert calls["received"] == 120
    assert calls["applied"] == 120
    assert all(counts == {"received": 1, "applied": 1} for counts in calls["by_execution"].values())
    assert {state for state, _, _ in restart_states(rapp)} == {"done"}
    assert "restart" in "".join(log.read_text() for log in logs)  # the workers took part


@pytest.mark.parametrize("stage", ["after", "before"])
def test_worker_killed_mid_call_leads_to_exactly_one_restart(
    rapp: Flask,
    control: SimulatorControl,
    sim: SimulatorServer,
    database_url: str,
    policy_file: Path,
    tmp_path: Path,
    stage: str,
) -> None:
    (execution_id,) = failing_fleet(control, executions=1)
    assert discover(rapp) == 1
    control.faults(hold_restart=stage, hold_count=1)
    worker = spawn_worker(worker_env(rapp, database_url, policy_file, sim), tmp_path / "w.log")
    try:
        assert control.wait_held(1, timeout=30)
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
    finally:
        if worker.poll() is None:
            worker.kill()
    # The call either took effect ("after") or never will ("before").
    control.release(action="proceed" if stage == "after" else "fail")
    control.faults(hold_restart=None)
    assert restart_states(rapp) == [("in_flight", None, 1)]

    time.sleep(get_settings(rapp).lease_seconds + 0.1)  # the dead worker's lease expires
    drain(rapp)

    calls = control.calls()["restart"]["by_execution"][execution_id]
    assert calls["applied"] == 1
    assert calls["received"] == (1 if stage == "after" else 2)
    ((state, outcome, attempts),) = restart_states(rapp)
    assert state == "done" and attempts == 2
    assert outcome == ("already_restarted" if stage == "after" else "restarted")
    with transaction(rapp) as session:
        outcomes = list(session.scalars(select(RestartAttempt.outcome).order_by(RestartAttempt.id)))
    assert outcomes[0] == "interrupted"


def test_burst_of_500s_is_retried_until_it_goes_through(
    rapp: Flask, control: SimulatorControl
) -> None:
    (execution_id,) = failing_fleet(control, executions=1)
    discover(rapp)
    control.faults(fail_next=3, error_status=500, match="restart")

    drain(rapp)

    assert restart_states(rapp) == [("done", "restarted", 4)]
    assert control.calls()["restart"]["by_execution"][execution_id] == {"received": 4, "applied": 1}


def test_timeout_after_the_runner_applied_it_is_not_sent_twice(
    make_app: Callable[..., Flask],
    policy_file: Path,
    sim: SimulatorServer,
    control: SimulatorControl,
) -> None:
    policy_file.write_text(POLICY)
    app = make_app(**runner_settings(sim))
    (execution_id,) = failing_fleet(control, executions=1)
    discover(app)
    control.faults(hang_next=1, hang_seconds=1.5, match="restart")
    # A read timeout shorter than the hang.
    client = RunnerClient(
        requests.Session(),
        sim.url,
        sim.auth_url,
        USER,
        PASSWORD,
        connect_timeout=1.0,
        read_timeout=0.5,
    )

    drain(app, Dispatcher(get_runtime(app), client))

    ((state, outcome, attempts),) = restart_states(app)
    assert (state, outcome, attempts) == ("done", "already_restarted", 2)
    assert control.calls()["restart"]["by_execution"][execution_id]["applied"] == 1


def test_expired_token_logs_in_again_once(rapp: Flask, control: SimulatorControl) -> None:
    (execution_id,) = failing_fleet(control, executions=1)
    client = make_runner_client(get_settings(rapp))
    assert client is not None
    reconciler = Reconciler(get_runtime(rapp), client)
    reconciler.run_once()
    assert client.login_count == 1
    control.expire_tokens()

    drain(rapp, Dispatcher(get_runtime(rapp), client))

    assert restart_states(rapp) == [("done", "restarted", 1)]
    assert client.login_count == 2
    assert control.calls()["restart"]["by_execution"][execution_id]["applied"] == 1


def test_refused_connection_gives_up_visibly(
    make_app: Callable[..., Flask],
    policy_file: Path,
    sim: SimulatorServer,
    control: SimulatorControl,
    api_headers: dict[str, str],
) -> None:
    policy_file.write_text(POLICY)
    (execution_id,) = failing_fleet(control, executions=1)
    discover(make_app(**runner_settings(sim)))
    closed = "http://127.0.0.1:9"  # discard port: nothing listens there
    app = make_app(**runner_settings(sim, runner_api_url=closed, max_send_attempts=3))

    drain(app)

    ((state, outcome, attempts),) = restart_states(app)
    assert (state, outcome, attempts) == ("failed", "gave_up", 3)
    assert control.calls()["restart"]["received"] == 0
    body = (
        app.test_client().get(f"/api/v1/executions/{execution_id}", headers=api_headers).get_json()
    )
    (restart,) = body["restarts"]
    assert "unavailable" in restart["outcome_detail"]
    assert [a["outcome"] for a in restart["attempt_log"]] == ["unavailable"] * 3


def test_restart_done_elsewhere_is_not_sent(
    rapp: Flask, control: SimulatorControl, sim: SimulatorServer
) -> None:
    (execution_id,) = failing_fleet(control, executions=1)
    discover(rapp)
    # Someone restarts it behind respawn's back before the dispatcher gets to it.
    sim.simulator.restart(
        ACCOUNT, sim.simulator.execution(execution_id)["job_id"], execution_id, {}
    )

    drain(rapp)

    assert restart_states(rapp) == [("not_needed", "already_restarted", 1)]
    assert control.calls()["restart"]["by_execution"].get(execution_id) is None


def test_runner_refusal_is_explained_not_retried(
    rapp: Flask, control: SimulatorControl, sim: SimulatorServer
) -> None:
    (execution_id,) = failing_fleet(control, executions=1)
    discover(rapp)
    control.faults(hold_restart="before", hold_count=1)
    worker = threading.Thread(target=drain, args=(rapp,))
    worker.start()
    assert control.wait_held(1, timeout=20)
    # Restarted some other way while our call waits: the Runner now answers 400.
    sim.simulator.restart(
        ACCOUNT, sim.simulator.execution(execution_id)["job_id"], execution_id, {}
    )
    control.release(action="proceed")
    worker.join(30)

    assert restart_states(rapp) == [("not_needed", "no_longer_failed", 1)]
    # Our call reached the Runner and was refused; only the other restart took effect.
    assert control.calls()["restart"]["by_execution"][execution_id] == {
        "received": 1,
        "applied": 0,
    }
    assert sim.simulator.execution(execution_id)["status"] == "PENDING"


def test_reconciler_finds_failures_whose_callbacks_were_lost(
    rapp: Flask, control: SimulatorControl, api_headers: dict[str, str]
) -> None:
    control.faults(drop_callbacks=1.0)
    executions = failing_fleet(control, executions=3, jobs=2)
    ok = control.fleet(
        {"account": ACCOUNT, "jobs": [{"description": "fine", "hosts": {"h1": "ok"}}]}
    )
    control.advance_until_idle()

    queued = discover(rapp)
    drain(rapp)

    assert queued == len(executions) == 6
    calls = control.calls()["restart"]["by_execution"]
    assert sorted(calls) == sorted(executions)
    client = rapp.test_client()
    for execution_id in executions:
        body = client.get(f"/api/v1/executions/{execution_id}", headers=api_headers).get_json()
        assert [d["action"] for d in body["decisions"]] == ["restart"]
        assert body["status"] == "PENDING" and body["restart_count"] == 1
    fine = ok["jobs"][0]["executions"][0]
    assert (
        client.get(f"/api/v1/executions/{fine}", headers=api_headers).get_json()["decisions"] == []
    )
    # A second pass finds nothing new and decides nothing twice.
    assert discover(rapp) == 0
    with transaction(rapp) as session:
        assert session.scalar(select(func.count()).select_from(Decision)) == 6


def test_planted_ssh_key_never_leaks(
    make_app: Callable[..., Flask],
    policy_file: Path,
    sim: SimulatorServer,
    control: SimulatorControl,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    api_headers: dict[str, str],
    database_url: str,
) -> None:
    marker = "PLANTEDSECRETKEYMATERIAL0123456789"
    key = f"-----BEGIN OPENSSH PRIVATE KEY-----\n{marker}\n-----END OPENSSH PRIVATE KEY-----\n"
    (tmp_path / "web.pem").write_text(key)
    keys = tmp_path / "keys.yaml"
    keys.write_text('"web*": web.pem\n')
    encoded = base64.b64encode(key.encode()).decode()
    policy_file.write_text(POLICY)
    app = make_app(**runner_settings(sim, ssh_keys_file=str(keys), log_level="DEBUG"))
    (execution_id,) = failing_fleet(control, executions=1)
    discover(app)
    caplog.set_level("DEBUG")

    drain(app)

    log_entry = control.calls()["restart"]["log"][-1]
    assert log_entry["applied"] is True
    assert log_entry["host_keys"] == ["web0a"]  # the key did travel, in the restart body
    client = app.test_client()
    answers = "".join(
        client.get(path, headers=api_headers).get_data(as_text=True)
        for path in (
            f"/api/v1/executions/{execution_id}",
            f"/api/v1/executions/{execution_id}/events",
            "/api/v1/executions",
        )
    )
    with transaction(app) as session:
        dump = []
        for table in (
            "executions",
            "events",
            "decisions",
            "restarts",
            "restart_attempts",
            "host_failures",
            "jobs",
            "audit_log",
        ):
            dump += [repr(row) for row in session.execute(text(f"SELECT * FROM {table}"))]
    out, err = capfd.readouterr()
    for where, blob in {
        "api": answers,
        "database": json.dumps(dump),
        "logs": caplog.text,
        "output": out + err,
    }.items():
        assert marker not in blob, where
        assert encoded[:40] not in blob, where


def test_restart_row_of_a_superseded_run_is_never_sent(
    rapp: Flask, control: SimulatorControl, sim: SimulatorServer
) -> None:
    (execution_id,) = failing_fleet(control, executions=1)
    assert discover(rapp) == 1
    # Restarted elsewhere; run 2 fails too, and respawn learns of it before dispatching.
    job_id = sim.simulator.execution(execution_id)["job_id"]
    sim.simulator.restart(ACCOUNT, job_id, execution_id, {})
    control.advance_until_idle()
    assert discover(rapp) == 1

    drain(rapp)

    # The second row's attempts are not counted: on a busy machine its call may time out
    # and be settled by the next attempt, which asks the Runner; it still arrives once.
    superseded, current = restart_states(rapp)
    assert superseded == ("not_needed", "superseded", 1)
    assert current[:2] == ("done", "restarted")
    assert control.calls()["restart"]["by_execution"][execution_id] == {
        "received": 1,
        "applied": 1,
    }
