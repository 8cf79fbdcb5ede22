"""The dispatcher tests' shared parts: a Runner simulator over real HTTP, an app wired to it
as `start_background` wires one, and helpers that run the reconciler and dispatchers."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask
from sqlalchemy import func, select
from werkzeug.serving import make_server

from app.dispatcher import Dispatcher, Reconciler
from app.dispatcher.reconciler import ReconcileReport
from app.extensions import get_runtime, get_settings
from app.models import Restart
from app.runner import RunnerClient
from app.runner.factory import make_runner_client
from app.simulator import SimulatorConfig, SimulatorControl, SimulatorServer
from tests.conftest import CALLBACK_TOKEN
from tests.helpers import transaction

USER, PASSWORD, ACCOUNT = "ops@example.com", "sim-pa55word-123", "XXXX"
POLICY = (
    "version: 1\n"
    "defaults: {backoff: {initial: 0s}, max_restarts: 5}\n"
    "limits: {per_job: null, per_account: null, global: null, per_host: null}\n"
    "circuit_breaker: null\n"
)
PROJECT = Path(__file__).resolve().parents[2]


@pytest.fixture
def make_sim() -> Iterator[Callable[..., SimulatorServer]]:
    """Simulators with their clock stopped (tests advance them), closed after the test."""
    servers: list[SimulatorServer] = []

    def make(clock: Callable[[], float] = time.time, **options: Any) -> SimulatorServer:
        options.setdefault("seed", 11)
        options.setdefault("speed", 0)
        config = SimulatorConfig.single_user(USER, PASSWORD, ACCOUNT, **options)
        server = SimulatorServer(config, clock=clock).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.close()


@pytest.fixture
def sim(make_sim: Callable[..., SimulatorServer]) -> SimulatorServer:
    return make_sim()


@pytest.fixture
def control(sim: SimulatorServer) -> Iterator[SimulatorControl]:
    with requests.Session() as session:
        yield SimulatorControl(session, sim.url)


def runner_settings(sim: SimulatorServer, **extra: Any) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "runner_api_url": sim.url,
        "runner_auth_url": sim.auth_url,
        "runner_username": USER,
        "runner_password": PASSWORD,
        "reconcile_accounts": (ACCOUNT,),
        "retry_base_seconds": 0.01,
        "uncertain_retry_seconds": 2.0,
        # Room for a loopback call on a loaded machine (the simulator shares the test's
        # process): a call that times out is retried, and a test counting attempts fails.
        # The lease outlasts the call's budget (6 s) by 3 s: a claim whose check with the
        # Runner took longer than the spare leaves unsent ("lease_expiring"), another
        # attempt that a test counting them would see (1 s was too little under load).
        "lease_seconds": 9.0,
        "runner_connect_timeout": 1.0,
        "runner_read_timeout": 5.0,
        "dispatch_interval": 0.05,
    }
    settings.update(extra)
    return settings


@pytest.fixture
def rapp(make_app: Callable[..., Flask], policy_file: Path, sim: SimulatorServer) -> Flask:
    policy_file.write_text(POLICY)
    return make_app(**runner_settings(sim))


def failing_fleet(
    control: SimulatorControl, executions: int, jobs: int = 1, script: str = "fail"
) -> list[str]:
    spec = {
        "account": ACCOUNT,
        "jobs": [
            {
                "description": f"deploy tier {n}",
                "hosts": {f"web{n}a": script, f"web{n}b": "ok"},
                "executions": executions,
            }
            for n in range(jobs)
        ],
    }
    created = control.fleet(spec)
    control.advance_until_idle()
    return [eid for job in created["jobs"] for eid in job["executions"]]


def runner_client(app: Flask) -> RunnerClient:
    """The app's Runner client, wired as `start_background` wires it (notes go to /readyz)."""
    client = make_runner_client(get_settings(app), on_note=get_runtime(app).note)
    assert client is not None
    return client


def reconcile(app: Flask, client: RunnerClient | None = None) -> ReconcileReport:
    """One reconciler pass: list the Runner's executions, store them, decide."""
    return Reconciler(get_runtime(app), client or runner_client(app)).run_once()


def discover(app: Flask) -> int:
    """Let the reconciler find the failures (no callbacks here) and queue restarts."""
    return reconcile(app).restarts_queued


def decide_from_feed(app: Flask, client: RunnerClient | None = None) -> int:
    """What the job-refresh thread does once callbacks arrived: fetch the new jobs' records,
    decide the failures that waited for them (no executions listing); restarts queued."""
    reconciler = Reconciler(get_runtime(app), client or runner_client(app))
    reconciler.refresh_jobs(ReconcileReport())
    return reconciler.decide_undecided()


def drain(app: Flask, dispatcher: Dispatcher | None = None, timeout: float = 30.0) -> None:
    if dispatcher is None:
        dispatcher = Dispatcher(get_runtime(app), runner_client(app), name="test-dispatcher")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        dispatcher.run_once()
        with transaction(app) as session:
            active = session.scalar(
                select(func.count())
                .select_from(Restart)
                .where(Restart.state.in_(("pending", "in_flight")))
            )
        if not active:
            return
        time.sleep(0.05)
    raise AssertionError("restarts still pending")


def restart_states(app: Flask) -> list[tuple[str, str | None, int]]:
    with transaction(app) as session:
        return [
            (r.state, r.outcome, r.attempts)
            for r in session.scalars(select(Restart).order_by(Restart.id))
        ]


def wait_until(predicate: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


@contextmanager
def serve(app: Flask) -> Iterator[str]:
    """Serve `app` over real HTTP on a loopback port; yields its callback URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/callbacks/{CALLBACK_TOKEN}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def callback_url(rapp: Flask) -> Iterator[str]:
    """rapp's receiver over real HTTP: the URL a job's callbacks name."""
    with serve(rapp) as url:
        yield url
