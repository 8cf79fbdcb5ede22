"""Scale-out, proven: two `respawn serve` instances (two gunicorn workers each) and two
`respawn worker` processes on one PostgreSQL database, the Runner simulator behind them.

A feed of signed callbacks (every status event of many executions, some failing on some
hosts) is posted in shuffled order, each callback to both instances and once more to either,
and the test shows what docs/operations.md ("Scale-out") promises: every event is stored
once, every failed run is decided once, budgets, quarantine and the circuit breaker are
counted over all processes (the policy's limits are reached only if the counts are shared),
and every restart reaches the Runner exactly once.

Three phases, each waited for:
1. first runs: six failures of one job (budget 3 per job: 3 restarts, 3 refused), two
   failures of host q1 (restarted), three successful runs of another job;
2. the five restarted executions fail again (five outcomes: the breaker trips, the runs
   themselves are refused by `max_restarts: 1`);
3. two more failures of q1 (its third and fourth: quarantined) and two failures of a fresh
   job (the breaker is open).
"""

from __future__ import annotations

import datetime as dt
import json
import random
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import create_engine, func, select
from sqlalchemy.engine import Engine

from app import webhooks
from app.models import Decision, Event, Execution, Restart, RestartAttempt
from app.simulator import SimulatorControl
from tests.conftest import PostgresServer
from tests.feed import failing_run_events, ms, run_events
from tests.system.processes import (
    PROJECT,
    TOKEN,
    base_env,
    free_port,
    migrate_cli,
    wait_until,
)

pytestmark = [pytest.mark.slow, pytest.mark.postgres]
SETTLE_SECONDS = 60
STARTUP_SECONDS = 90

ACCOUNT = "XXXX"
USER, PASSWORD = "scale@example.com", "scale-out-pa55word"
WEBHOOK_SECRET = "whsec_c2NhbGUtb3V0LXRlc3Qtc2lnbmluZy1rZXk="
STDERR = "deploy: connection to the package mirror timed out"
POLICY = """
version: 1
defaults: {backoff: {initial: 0s, jitter: 0}, max_restarts: 1, deadline: 6h}
limits:
  per_job: {restarts: 3, window: 1h}
  per_account: null
  global: null
  per_host: {failures: 3, window: 1h, quarantine: 1h}
circuit_breaker: {failure_ratio: 0.5, min_restarts: 5, window: 1h, cool_down: 1h}
"""
"""Budget 3 restarts per job; a host's third failure within the hour quarantines it; five
finished restarts that failed again open the breaker. Nothing is restarted twice."""


# --- the processes ------------------------------------------------------------------------


class Processes:
    """`respawn` subcommands started one after another and stopped all at once: SIGTERM to
    every one, then a wait for each (SIGKILL if one hangs)."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.children: list[subprocess.Popen[str]] = []

    def start(self, argv: list[str], log: Path, **extra: str) -> None:
        command = [sys.executable, "-m", "app.cli", *argv]
        with log.open("w") as out:
            child = subprocess.Popen(
                command, cwd=PROJECT, env={**self.env, **extra}, stdout=out,
                stderr=subprocess.STDOUT, text=True,
            )  # fmt: skip
        self.children.append(child)

    def stop(self) -> None:
        for child in self.children:
            child.terminate()
        for child in self.children:
            try:
                child.wait(30)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait(10)


def tail(log: Path) -> str:
    return log.read_text()[-2000:] if log.exists() else ""


class Runner:
    """The simulator's Runner API and control API, as the test uses them."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.http = requests.Session()
        self.control = SimulatorControl(self.http, base)
        self._token: str | None = None

    def _headers(self) -> dict[str, str]:
        if self._token is None:
            answer = self.http.post(
                f"{self.base}/v2/authentication/login",
                json={"username": USER, "password": PASSWORD},
                timeout=10,
            )
            answer.raise_for_status()
            self._token = str(answer.json()["bearerToken"])
        return {"Authorization": f"Bearer {self._token}"}

    def job(self, description: str, hosts: dict[str, str]) -> str:
        """A job whose hosts behave by their scripts; no callbacks (the test is the feed)."""
        created = self.control.fleet(
            {"account": ACCOUNT, "jobs": [{"description": description, "hosts": hosts,
                                           "executions": 0}]}
        )  # fmt: skip
        return str(created["jobs"][0]["id"])

    def start(self, job_id: str, hosts: list[str] | None = None) -> str:
        body = {"hosts": [{"id": h} for h in hosts]} if hosts else {}
        answer = self.http.post(
            f"{self.base}/jobs/{ACCOUNT}/{job_id}/start",
            json=body,
            headers=self._headers(),
            timeout=10,
        )
        answer.raise_for_status()
        return str(answer.json()["execution_id"])

    def restarts_received(self) -> dict[str, int]:
        calls = self.control.calls()["restart"]["by_execution"]
        return {eid: int(c["received"]) for eid, c in calls.items() if c["received"]}


# --- the feed -----------------------------------------------------------------------------


def post_all(instances: list[str], callbacks: list[dict[str, Any]], seed: int) -> Counter[str]:
    """Post each callback (one status event, signed) to both instances and once more to
    either, all in shuffled order from eight threads; the answers' counts, summed."""
    shuffle = random.Random(seed)
    sends: list[tuple[str, bytes, str]] = []
    for item in callbacks:
        body = json.dumps(item).encode()
        webhook_id = f"msg_{uuid.uuid4().hex}"
        for base in [*instances, shuffle.choice(instances)]:
            sends.append((base, body, webhook_id))
    shuffle.shuffle(sends)

    def send(one: tuple[str, bytes, str]) -> dict[str, Any]:
        base, body, webhook_id = one
        at = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "webhook-id": webhook_id,
            "webhook-timestamp": str(at),
            "webhook-signature": webhooks.sign(WEBHOOK_SECRET, webhook_id, at, body),
        }
        # A connection per callback, so every gunicorn worker of both instances takes some.
        with requests.Session() as http:
            answer = http.post(f"{base}/callbacks/{TOKEN}", data=body, headers=headers, timeout=30)
        assert answer.status_code == 202, answer.text
        result: dict[str, Any] = answer.json()
        return result

    totals: Counter[str] = Counter()
    with ThreadPoolExecutor(8) as pool:
        for answer in pool.map(send, sends):
            totals.update(accepted=answer["accepted"], duplicates=answer["duplicates"])
    totals["sent"] = len(sends)
    return totals


# --- what the database says ---------------------------------------------------------------


def reasons(engine: Engine) -> Counter[str]:
    with engine.connect() as connection:
        rows = connection.execute(
            select(Decision.reason_code, func.count()).group_by(Decision.reason_code)
        )
        return Counter({str(code): int(n) for code, n in rows})


def tally(engine: Engine) -> dict[str, int]:
    """Events stored and still pending, decisions taken, restarts not yet final."""
    with engine.connect() as connection:
        return {
            # (Restart answers are recorded as events too, of kind "document".)
            "events": connection.scalar(select(func.count()).where(Event.kind == "event")) or 0,
            "pending": connection.scalar(select(func.count()).where(Event.pending.is_(True))) or 0,
            "decisions": connection.scalar(select(func.count()).select_from(Decision)) or 0,
            "moving": connection.scalar(
                select(func.count()).where(Restart.state.in_(["pending", "in_flight", "held"]))
            )
            or 0,
        }


def moving(engine: Engine) -> list[str]:
    """The restarts not yet final, each with its attempts: what a time-out needs explained."""
    lines = []
    with engine.connect() as connection:
        restarts = connection.execute(
            select(Restart.id, Restart.state, Restart.due_at, Restart.lease_owner).where(
                Restart.state.in_(["pending", "in_flight", "held"])
            )
        )
        for restart_id, state, due_at, owner in restarts.all():
            attempts = connection.execute(
                select(RestartAttempt.worker, RestartAttempt.outcome, RestartAttempt.detail)
                .where(RestartAttempt.restart_id == restart_id)
                .order_by(RestartAttempt.id)
            ).all()
            lines.append(f"restart {restart_id} {state} due {due_at} lease {owner}: {attempts}")
    return lines


def wait_settled(engine: Engine, events: int, decisions: int, what: str) -> None:
    """Poll until every event is stored and applied, this many decisions are taken and no
    restart is on its way; on time-out say what the database holds."""
    expected = {"events": events, "pending": 0, "decisions": decisions, "moving": 0}
    deadline = time.monotonic() + SETTLE_SECONDS
    while (found := tally(engine)) != expected:
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{what}: expected {expected}, found {found}, {reasons(engine)}, {moving(engine)}"
            )
        time.sleep(0.1)


@pytest.fixture
def database(postgres_server: PostgresServer) -> Iterator[str]:
    """ONE fresh, empty database: the test migrates it as a release would."""
    name = postgres_server.create()
    try:
        yield postgres_server.url_for(name)
    finally:
        postgres_server.drop(name)


@pytest.mark.timeout(180)  # about 65 s on 2 cores at a load average of 8
def test_two_instances_and_two_workers_share_one_database(database: str, tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    sim_port = free_port()
    sim_base = f"http://127.0.0.1:{sim_port}"
    env = base_env(
        database,
        tmp_path,
        RESPAWN_POLICY_FILE=str(policy),
        RESPAWN_WEBHOOK_SECRET=WEBHOOK_SECRET,
        RESPAWN_DISPATCHER="off",
        RESPAWN_RUNNER_API_URL=sim_base,
        RESPAWN_RUNNER_AUTH_URL=f"{sim_base}/v2/authentication/login",
        RESPAWN_RUNNER_USERNAME=USER,
        RESPAWN_RUNNER_PASSWORD=PASSWORD,
        RESPAWN_DISPATCH_INTERVAL="0.2",
        RESPAWN_LOG_LEVEL="WARNING",
        # Two instances take the same callbacks: one waits for the other's commit of a
        # delivery before it counts it a duplicate; give that wait room on a busy machine.
        RESPAWN_INTAKE_TIMEOUT="5",
        # A Runner call that times out on a busy machine is retried (after the dispatcher
        # asks the Runner whether it arrived) within the test's wait, not a minute later.
        RESPAWN_RUNNER_READ_TIMEOUT="20",
        RESPAWN_RETRY_BASE_SECONDS="0.5",
        RESPAWN_UNCERTAIN_RETRY_SECONDS="3",
        PYTHONUNBUFFERED="1",
    )
    with ExitStack() as stack:
        processes = Processes(env)
        stack.callback(processes.stop)
        sim_log = tmp_path / "simulator.log"
        processes.start(
            ["simulator", "--port", str(sim_port), "--speed", "0", "--seed", "16",
             "--username", USER, "--account", ACCOUNT],
            sim_log,
            RESPAWN_SIM_PASSWORD=PASSWORD,
        )  # fmt: skip
        migrate_cli(env)  # the release step, once, before anything serves
        # Then everything starts at once; the Runner's side is set up while respawn boots.
        ports = [free_port() for _ in range(2)]
        instances = [f"http://127.0.0.1:{port}" for port in ports]
        logs = [tmp_path / f"serve-{port}.log" for port in ports]
        for port, log in zip(ports, logs, strict=True):
            processes.start(["serve", "--bind", f"127.0.0.1:{port}", "--workers", "2"], log)
        worker_logs = [tmp_path / f"worker-{n}.log" for n in range(2)]
        for log in worker_logs:
            # No reconciler: its pass at start could find on the Runner the failures the
            # feed brings later, and decide them before their phase.
            processes.start(["worker", "--dispatchers", "2", "--no-reconcile"], log)

        wait_until(
            lambda: requests.get(f"{sim_base}/_sim/health", timeout=2).ok,
            STARTUP_SECONDS,
            "the simulator",
        )
        runner = Runner(sim_base)

        # The Runner's side: every execution exists and has failed (or succeeded) there.
        budget_job = runner.job("deploy shop", {f"b{n}": "fail" for n in range(1, 7)})
        budget = [runner.start(budget_job, [f"b{n}"]) for n in range(1, 7)]
        host_job = runner.job("rotate logs", {"q1": "fail", "q2": "ok"})
        flaky_host = [runner.start(host_job) for _ in range(4)]
        late_job = runner.job("renew certificates", {"d1": "fail"})
        late = [runner.start(late_job) for _ in range(2)]
        steady_job = runner.job("steady", {"web1": "ok"})
        steady = [runner.start(steady_job) for _ in range(3)]
        first_runs_at = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
        runner.control.advance_until_idle()

        def failed(
            eid: str, job: str, hosts: dict[str, str], ok: tuple[str, ...] = ()
        ) -> list[dict[str, Any]]:
            return run_events(eid, job, first_runs_at, hosts, ok)

        phase1: list[dict[str, Any]] = []
        for n, eid in enumerate(budget, 1):
            phase1 += failed(eid, budget_job, {f"b{n}": STDERR})
        for eid in flaky_host[:2]:
            phase1 += failed(eid, host_job, {"q1": STDERR}, ("q2",))
        for eid in steady:
            phase1 += failing_run_events(ms(first_runs_at), (), f"{eid}-", eid, steady_job, ACCOUNT)

        for base, log in zip(instances, logs, strict=True):
            wait_until(
                lambda base=base: requests.get(f"{base}/readyz", timeout=2).ok,  # type: ignore[misc]
                STARTUP_SECONDS,
                f"respawn serve ({log.name})",
            )
        for log in worker_logs:
            wait_until(
                lambda log=log: "respawn worker:" in tail(log),  # type: ignore[misc]
                STARTUP_SECONDS,
                f"respawn worker ({log.name})",
            )

        engine = create_engine(database)
        stack.callback(engine.dispose)

        # 1. First runs.
        answered = post_all(instances, phase1, seed=1)
        assert answered["accepted"] + answered["duplicates"] == answered["sent"]
        assert answered["accepted"] >= len(phase1)  # exact unless a callback was spooled
        wait_settled(engine, len(phase1), 8, "the first runs")
        assert reasons(engine) == {"restart": 5, "budget_per_job": 3}
        restarted = set(runner.restarts_received())
        assert len(restarted) == 5

        # 2. The restarted executions fail again (on the Runner, then in the feed).
        runner.control.advance_until_idle()
        second_runs_at = dt.datetime.now(dt.UTC)
        host_of = {eid: f"b{n}" for n, eid in enumerate(budget, 1)} | dict.fromkeys(
            flaky_host[:2], "q1"
        )
        job_of = dict.fromkeys(budget, budget_job) | dict.fromkeys(flaky_host, host_job)
        phase2 = [
            e
            for eid in sorted(restarted)
            for e in run_events(
                eid, job_of[eid], second_runs_at, {host_of[eid]: STDERR}, prefix=f"{eid}-run2"
            )
        ]
        answered = post_all(instances, phase2, seed=2)
        assert answered["accepted"] >= len(phase2)
        events = len(phase1) + len(phase2)
        wait_settled(engine, events, 13, "the second runs")
        with engine.connect() as connection:
            results = Counter(connection.scalars(select(Restart.result)))
        assert results == {"failed_again": 5}

        # 3. q1's third and fourth failures; a fresh job's failures while the breaker is open.
        phase3: list[dict[str, Any]] = []
        for eid in flaky_host[2:]:
            phase3 += failed(eid, host_job, {"q1": STDERR}, ("q2",))
        for eid in late:
            phase3 += failed(eid, late_job, {"d1": STDERR})
        answered = post_all(instances, phase3, seed=3)
        assert answered["accepted"] >= len(phase3)
        events += len(phase3)
        wait_settled(engine, events, 17, "the last failures")

        # Every event stored once, whichever instance took it and however often.
        with engine.connect() as connection:
            ids = list(connection.scalars(select(Event.event_id).where(Event.kind == "event")))
            per_run = list(
                connection.execute(
                    select(Decision.execution_pk, Decision.run_index, func.count()).group_by(
                        Decision.execution_pk, Decision.run_index
                    )
                )
            )
            failed_runs = connection.scalar(
                select(func.sum(Execution.restart_count + 1)).where(Execution.status == "FAILURE")
            )
            restarts = list(connection.execute(select(Restart.state, Restart.attempts)))
        assert len(ids) == len(set(ids)) == events
        # Every failed run decided exactly once.
        assert len(per_run) == failed_runs == 17
        assert {n for *_, n in per_run} == {1}
        # Budgets, quarantine and the breaker counted over all processes.
        assert reasons(engine) == {
            "restart": 5,
            "budget_per_job": 3,
            "max_restarts": 5,
            "quarantine": 2,
            "breaker_open": 2,
        }
        # Every restart sent exactly once: each done, one call each at the Runner (a busy
        # machine may cost an attempt that never reached it, e.g. a connection refused).
        assert [state for state, _ in restarts] == ["done"] * 5
        received = runner.restarts_received()
        assert received == dict.fromkeys(restarted, 1)
        assert sum(1 for eid in budget if eid in restarted) == 3
        assert set(flaky_host[:2]) <= restarted
