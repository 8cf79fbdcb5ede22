"""Decision latency: `decide_restart` per call, for simple, typical and worst-case inputs.

Baselines in the same rounds: `json.loads` of one status event as the Runner sends it (the
receiver parses one per event anyway), and a no-op call with the same arguments.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import time
from collections.abc import Callable
from typing import Any

from app.core.stats import MAX_HOST_HISTORY, MAX_OUTCOMES
from app.policy import (
    BudgetUsage,
    DecisionInput,
    HostFailure,
    Policy,
    RestartOutcome,
    decide_restart,
    parse_policy,
)
from app.policy.patterns import MESSAGE_SCAN_LIMIT
from bench import feed
from bench.common import PROJECT_POLICY, Context, interleave, ratio, table, times, us

NAME = "decision"
TITLE = "Decision latency"
NOW = dt.datetime(2026, 11, 1, 12, 0, tzinfo=dt.UTC)


def _simple() -> tuple[Policy, DecisionInput]:
    policy = parse_policy("version: 1\n")
    inp = DecisionInput(
        execution_id="6a1f3c1e-0000-4000-8000-000000000001",
        account="ACME",
        job_id="job-1",
        job_description="deploy web tier",
        status="FAILURE",
        run_index=0,
        run_count=1,
        first_failure_at=NOW,
        now=NOW,
        failed_hosts=(HostFailure("web1", "task_failed", "non-zero return code", 0),),
    )
    return policy, inp


def _typical() -> tuple[Policy, DecisionInput]:
    policy = parse_policy(PROJECT_POLICY.read_text(), str(PROJECT_POLICY))
    hosts = (
        HostFailure("web2", "task_failed", "non-zero return code\n" + feed.STDERR, 1),
        HostFailure(
            "web3",
            "unreachable",
            "Failed to connect to the host via ssh: connect to host web3 port 22: "
            "Connection timed out",
            0,
        ),
    )
    history = {h.host: tuple(NOW - dt.timedelta(hours=n * 7) for n in range(3)) for h in hosts}
    rng = random.Random(1)
    outcomes = tuple(
        sorted(
            RestartOutcome(NOW - dt.timedelta(seconds=rng.randint(0, 1500)), rng.random() < 0.2)
            for _ in range(40)
        )
    )
    inp = DecisionInput(
        execution_id="6a1f3c1e-0000-4000-8000-000000000002",
        account="ACME",
        job_id="5f0c2d1e-1111-4000-8000-00000000abcd",
        job_description="deploy web tier",
        status="FAILURE",
        run_index=1,
        run_count=2,
        first_failure_at=NOW - dt.timedelta(minutes=20),
        now=NOW,
        failed_hosts=hosts,
        prior_restarts=1,
        usage=BudgetUsage(per_job=3, per_account=12, global_=60),
        host_failure_times=history,
        restart_outcomes=outcomes,
    )
    return policy, inp


def _worst() -> tuple[Policy, DecisionInput]:
    """As much as the receiver ever hands the engine: 20 hosts with messages at the scan
    limit that no rule's pattern matches (every pattern scans all of it), a full host
    history (19 hosts quarantined, one left to restart) and the full breaker history."""
    policy = parse_policy(PROJECT_POLICY.read_text(), str(PROJECT_POLICY))
    rng = random.Random(2)
    filler = "TASK [deploy configuration] changed: [app] => (item=/etc/app/conf.d/x.conf)\n"
    message = (filler * (MESSAGE_SCAN_LIMIT // len(filler) + 1))[:MESSAGE_SCAN_LIMIT]
    hosts = tuple(
        HostFailure(f"web{n:02d}", "task_failed" if n % 2 else "unreachable", message, 0)
        for n in range(20)
    )
    history: dict[str, tuple[dt.datetime, ...]] = {}
    for n, host in enumerate(hosts):
        count = 4 if n == 0 else MAX_HOST_HISTORY
        history[host.host] = tuple(
            sorted(NOW - dt.timedelta(seconds=rng.randint(0, 29 * 3600)) for _ in range(count))
        )
    outcomes = tuple(
        sorted(
            RestartOutcome(NOW - dt.timedelta(seconds=rng.randint(0, 1500)), rng.random() < 0.3)
            for _ in range(MAX_OUTCOMES)
        )
    )
    inp = DecisionInput(
        execution_id="6a1f3c1e-0000-4000-8000-000000000003",
        account="ACME",
        job_id="5f0c2d1e-1111-4000-8000-00000000abcd",
        job_description="deploy web tier",
        status="FAILURE",
        run_index=1,
        run_count=2,
        first_failure_at=NOW - dt.timedelta(minutes=20),
        now=NOW,
        failed_hosts=hosts,
        prior_restarts=1,
        usage=BudgetUsage(per_job=3, per_account=12, global_=60),
        host_failure_times=history,
        restart_outcomes=outcomes,
    )
    return policy, inp


def _noop(policy: Policy, inp: DecisionInput) -> None:
    return None


def _loop(
    function: Callable[..., Any], args: tuple[Any, ...], loops: int
) -> Callable[[int], float]:
    def chunk(_index: int) -> float:
        for _ in range(loops):
            function(*args)
        return float(loops)

    return chunk


def _loops_for(function: Callable[..., Any], args: tuple[Any, ...], target: float) -> int:
    """How many calls make a chunk of about `target` seconds."""
    began = time.perf_counter()
    calls = 0
    while time.perf_counter() - began < target / 4 or calls < 3:
        function(*args)
        calls += 1
    per_call = (time.perf_counter() - began) / calls
    return max(1, int(target / per_call))


def run(ctx: Context) -> None:
    failures = [
        e
        for e in feed.flat(feed.feed(8, 3, fail_share=1.0))
        if e["event_type"] == "runner_on_failed"
    ]
    event = json.dumps(failures[0]).encode()
    cases = {"simple": _simple(), "typical": _typical(), "worst case": _worst()}
    decisions = {name: decide_restart(*args) for name, args in cases.items()}
    target = ctx.size(0.03, 0.01)
    subjects: dict[str, Callable[[int], float]] = {
        "json.loads(event)": _loop(json.loads, (event,), _loops_for(json.loads, (event,), target)),
        "no-op call": _loop(_noop, cases["simple"], _loops_for(_noop, cases["simple"], target)),
    }
    for name, args in cases.items():
        subjects[f"decide_restart, {name}"] = _loop(
            decide_restart, args, _loops_for(decide_restart, args, target)
        )
    samples = interleave(subjects, ctx.size(40, 8))
    loads, noop = samples["json.loads(event)"], samples["no-op call"]
    rows = []
    for name, sample in samples.items():
        case = name.removeprefix("decide_restart, ")
        outcome = ""
        if case in decisions:
            decision = decisions[case]
            outcome = f"{decision.action} ({decision.reason_code}, rule {decision.rule})"
        rows.append(
            [
                name,
                us(sample.median),
                us(sample.p95),
                "1 (baseline)" if sample is loads else times(ratio(sample, loads)),
                times(ratio(sample, noop)),
                outcome,
            ]
        )
    table(
        "decide_restart per call",
        ["subject", "median us", "p95 us", "x json.loads", "x no-op", "decision"],
        rows,
        f"event: one runner_on_failed status event ({len(event)} bytes).\n"
        "simple: built-in defaults, 1 host. typical: policy.yaml, 2 hosts, short histories.\n"
        f"worst case: policy.yaml, 20 hosts x {MESSAGE_SCAN_LIMIT}-char messages, "
        f"{MAX_HOST_HISTORY} past failures per host, {MAX_OUTCOMES} breaker outcomes (the caps of\n"
        "app/core/stats.py).",
    )
