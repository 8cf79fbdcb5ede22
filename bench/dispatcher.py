"""Dispatcher throughput: restarts carried out per second against the Runner simulator.

The simulator runs in its own process (`respawn simulator`, clock stopped) on loopback. Each
round, for each subject: a fresh fleet of failed executions; for the dispatcher subjects a
fresh database in which the reconciler has recorded the failures and queued one restart
each (untimed), then 1 or 4 `Dispatcher` threads sharing one Runner client drain the outbox
(timed: claim, call, record, per restart). Baseline, in the same rounds: a plain
`RunnerClient` calling the restart endpoint for the same number of executions from 1 or 4
threads. Every subject is checked: each execution restarted exactly once.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import requests
from flask import Flask
from sqlalchemy import func, select

from app.dispatcher import Dispatcher, Reconciler
from app.extensions import get_runtime
from app.models import Restart
from app.runner import RunnerClient
from app.runner.resources import RestartHost
from app.simulator import SimulatorControl
from bench.common import (
    OPEN_POLICY,
    PROJECT,
    Context,
    free_port,
    interleave,
    per_second,
    ratio,
    running_app,
    table,
    times,
)
from tests.helpers import transaction

NAME = "dispatcher"
TITLE = "Dispatcher throughput"
USER, PASSWORD, ACCOUNT = "bench@example.com", "bench-sim-password-1", "XXXX"
PER_JOB = 25


@dataclass
class Simulator:
    url: str
    control: SimulatorControl

    @property
    def auth_url(self) -> str:
        return self.url + "/v2/authentication/login"


@contextmanager
def simulator() -> Iterator[Simulator]:
    """`respawn simulator` in a process of its own, its clock stopped."""
    port = free_port()
    argv = [
        sys.executable, "-m", "app.cli", "simulator", "--port", str(port), "--seed", "5",
        "--speed", "0", "--username", USER, "--password", PASSWORD, "--account", ACCOUNT,
        "--max-running", "100000",
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("RESPAWN_")}
    process = subprocess.Popen(
        argv, cwd=PROJECT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    session = requests.Session()
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if session.get(url + "/_sim/health", timeout=2).ok:
                    break
            except requests.ConnectionError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the simulator did not start")
            time.sleep(0.1)
        yield Simulator(url, SimulatorControl(session, url, timeout=120))
    finally:
        session.close()
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def failed_fleet(sim: Simulator, executions: int) -> list[tuple[str, str, str]]:
    """`executions` FAILURE executions, one failed host each: (job id, execution id, host)."""
    sim.control.reset()
    jobs = [
        {
            "description": f"bench tier {n}",
            "hosts": {f"t{n}a": "fail", f"t{n}b": "ok"},
            "executions": min(PER_JOB, executions - n * PER_JOB),
        }
        for n in range((executions + PER_JOB - 1) // PER_JOB)
    ]
    created = sim.control.fleet({"account": ACCOUNT, "jobs": jobs})
    sim.control.advance_until_idle()
    return [
        (job["id"], eid, job["hosts"][0]) for job in created["jobs"] for eid in job["executions"]
    ]


def _check(sim: Simulator, executions: list[tuple[str, str, str]]) -> str:
    by_execution = sim.control.calls()["restart"]["by_execution"]
    once = sum(
        1
        for _, eid, _ in executions
        if by_execution.get(eid, {}).get("applied") == 1
        and by_execution.get(eid, {}).get("received") == 1
    )
    return "" if once == len(executions) else f"{once}/{len(executions)} restarted exactly once"


def _in_threads(threads: int, work: Callable[[int], None]) -> float:
    """Run work(0..threads-1) in threads started together; seconds until all are done."""
    barrier = threading.Barrier(threads + 1)
    errors: list[BaseException] = []

    def target(index: int) -> None:
        barrier.wait()
        try:
            work(index)
        except BaseException as exc:  # noqa: BLE001  (re-raised in the main thread)
            errors.append(exc)

    workers = [threading.Thread(target=target, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    barrier.wait()
    began = time.perf_counter()
    for worker in workers:
        worker.join()
    if errors:
        raise errors[0]
    return time.perf_counter() - began


class RawRestarts:
    """The baseline: the restart endpoint called directly, `threads` at a time."""

    def __init__(self, sim: Simulator, threads: int, size: int, problems: list[str]) -> None:
        self.sim, self.threads, self.size, self.problems = sim, threads, size, problems

    def __call__(self, _index: int) -> tuple[float, float]:
        executions = failed_fleet(self.sim, self.size)
        with requests.Session() as session:
            client = RunnerClient(session, self.sim.url, self.sim.auth_url, USER, PASSWORD)
            client.get_execution(ACCOUNT, *executions[0][:2])  # log in before the clock starts

            def work(index: int) -> None:
                for job_id, eid, host in executions[index :: self.threads]:
                    client.restart(ACCOUNT, job_id, eid, hosts=[RestartHost(host)])

            seconds = _in_threads(self.threads, work)
        if problem := _check(self.sim, executions):
            self.problems.append(f"raw x{self.threads}: {problem}")
        return float(len(executions)), seconds


class DispatchedRestarts:
    """respawn: failures recorded and decided by the reconciler (untimed), then the outbox
    drained by `threads` Dispatchers sharing one Runner client (timed)."""

    def __init__(
        self, ctx: Context, sim: Simulator, kind: str, threads: int, size: int, problems: list[str]
    ) -> None:
        self.ctx, self.sim, self.kind, self.threads, self.size = ctx, sim, kind, threads, size
        self.problems = problems
        self.policy = ctx.folder("dispatcher") / "policy.yaml"
        self.policy.write_text(OPEN_POLICY)

    def _settings(self) -> dict[str, Any]:
        return {
            "runner_api_url": self.sim.url,
            "runner_auth_url": self.sim.auth_url,
            "runner_username": USER,
            "runner_password": PASSWORD,
            "reconcile_accounts": (ACCOUNT,),
            "reconcile_max_pages": self.size // 100 + 2,
            "lease_seconds": 60.0,
        }

    def __call__(self, _index: int) -> tuple[float, float]:
        executions = failed_fleet(self.sim, self.size)
        instance = self.ctx.folder("dispatcher-instance")
        with (
            self.ctx.databases.database(self.kind) as url,
            running_app(url, self.policy, instance, **self._settings()) as app,
            requests.Session() as session,
        ):
            # One client shared by the dispatcher threads, as Background shares it.
            client = RunnerClient(session, self.sim.url, self.sim.auth_url, USER, PASSWORD)
            queued = Reconciler(get_runtime(app), client).run_once().restarts_queued
            if queued != len(executions):
                self.problems.append(f"{self.kind} x{self.threads}: {queued} restarts queued")
            dispatchers = [
                Dispatcher(get_runtime(app), client, name=f"bench-{n}") for n in range(self.threads)
            ]

            def drain(index: int) -> None:
                dispatchers[index].run_once()

            seconds = _in_threads(self.threads, drain)
            done = _count_done(app)
        if done != len(executions):
            self.problems.append(f"{self.kind} x{self.threads}: {done} restarts done")
        if problem := _check(self.sim, executions):
            self.problems.append(f"{self.kind} x{self.threads}: {problem}")
        return float(len(executions)), seconds


def _count_done(app: Flask) -> int:
    with transaction(app) as session:
        return (
            session.scalar(select(func.count()).select_from(Restart).where(Restart.state == "done"))
            or 0
        )


def run(ctx: Context) -> None:
    size = ctx.size(150, 20)
    rounds = ctx.size(3, 1)
    problems: list[str] = []
    rows = []
    with simulator() as sim:
        for threads in (1, 4):
            subjects: dict[str, Any] = {"raw": RawRestarts(sim, threads, size, problems)}
            for kind in ctx.databases.kinds:
                subjects[kind] = DispatchedRestarts(ctx, sim, kind, threads, size, problems)
            samples = interleave(subjects, rounds, min_rounds=1)
            base = samples["raw"]
            for name, sample in samples.items():
                label = (
                    "raw RunnerClient.restart" if name == "raw" else f"respawn dispatcher, {name}"
                )
                rows.append(
                    [
                        str(threads),
                        label,
                        per_second(sample.rate),
                        f"{sample.median * 1000:.1f}",
                        "1 (baseline)" if sample is base else times(ratio(sample, base)),
                    ]
                )
    table(
        f"Restarts carried out ({size} per subject and round, {rounds} round(s))",
        ["threads", "subject", "restarts/s", "ms/restart", "x baseline"],
        rows,
        "x baseline: time per restart relative to raw restart calls with the same threads.\n"
        "dispatcher: claim under a lease (one transaction), POST restart, record the answer and\n"
        "the execution's next run (a second transaction), per restart.\n"
        + ("checks: every execution restarted exactly once" if not problems else
           "CHECK FAILURES: " + "; ".join(problems)),
    )  # fmt: skip
