"""Failed runs decided together in one batch are decided as if one at a time: what the batch
reads once (failed hosts, host history, breaker outcomes, signature sightings) is kept up to
date as each of its decisions is stored (`app.core.decision_inputs.BatchInputs`)."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.core.deliveries import parse_deliveries
from app.core.ingest import ingest_and_decide
from app.db import transaction, utcnow
from app.models import Decision, Execution, Restart
from app.policy import Policy, parse_policy
from tests.feed import event

POLICY_TEXT = """
version: 1
defaults: {backoff: {initial: 0s, jitter: 0}, max_restarts: 3}
limits:
  per_job: {restarts: 1, window: 1h}
  per_account: null
  global: null
  per_host: null
circuit_breaker:
  failure_ratio: 0.5
  min_restarts: 1000
  per_signature: {executions: 4, jobs: 3, window: 10m, cool_down: 15m}
"""
POLICY = parse_policy(POLICY_TEXT)
T0 = int(time.time() * 1000) - 60_000
JOBS = ("job-1", "job-1", "job-2", "job-3", "job-2", "job-3")
"""Six failed runs: the second is job-1's second (its budget of one restart is used), the
fourth makes four executions of three jobs with one signature (the breaker opens)."""


def failed_run(world: str, n: int, message: str) -> list[dict[str, Any]]:
    common: dict[str, Any] = {"execution_id": f"{world}-exec-{n}", "job_id": f"{world}-{JOBS[n]}"}
    host = f"{world}-host-{n}"
    t = T0 + n * 1000
    stats = {host: {"ok": 0, "changed": 0, "unreachable": 0, "failures": 1, "skipped": 0}}
    return [
        event("playbook_on_start", t, event_id=f"{world}{n}-1", **common),
        event("runner_on_failed", t + 1, host, event_id=f"{world}{n}-2", msg=message, **common),
        event(
            "playbook_result",
            t + 2,
            event_id=f"{world}{n}-3",
            status="FAILURE",
            stats=stats,
            **common,
        ),
    ]


def outcomes(sessions: sessionmaker[Session], world: str) -> list[tuple[str, str, str | None]]:
    """Each run's decision (action, reason code) and its restart's state, in run order."""
    with sessions() as session:
        rows = session.execute(
            select(Decision.action, Decision.reason_code, Restart.state)
            .join(Execution, Execution.id == Decision.execution_pk)
            .outerjoin(Restart, Restart.decision_id == Decision.id)
            .where(Execution.execution_id.like(f"{world}-%"))
            .order_by(Execution.execution_id)
        )
        return [(action, code, state) for action, code, state in rows]


def decide_both_ways(
    sessions: sessionmaker[Session], policy: Policy, messages: tuple[str, ...]
) -> tuple[list[Any], list[Any]]:
    """The six runs decided in one batch (world a), then one at a time (world b, with its
    own jobs, hosts and error signatures); run n fails with message n modulo their count."""
    now = utcnow()
    batched = [
        item
        for n in range(6)
        for item in failed_run("a", n, f"{messages[n % len(messages)]} on alpha")
    ]
    with transaction(sessions) as session:
        ingest_and_decide(session, parse_deliveries(batched, None, 100), now, policy, False)
    for n in range(6):
        with transaction(sessions) as session:
            body = failed_run("b", n, f"{messages[n % len(messages)]} on beta")
            ingest_and_decide(session, parse_deliveries(body, None, 100), now, policy, False)
    return outcomes(sessions, "a"), outcomes(sessions, "b")


def test_a_batch_of_failures_is_decided_as_one_failure_at_a_time(
    sessions: sessionmaker[Session],
) -> None:
    batched, one_at_a_time = decide_both_ways(sessions, POLICY, ("disk full",))

    assert batched == one_at_a_time
    # The breaker opened at the fourth and held the restarts queued before it.
    assert one_at_a_time == [
        ("restart", "restart", "held"),
        ("skip", "budget_per_job", None),
        ("restart", "restart", "held"),
        ("held", "signature_open", "held"),
        ("held", "signature_open", "held"),
        ("held", "signature_open", "held"),
    ]


def test_a_batch_with_two_signatures_counts_each_apart(sessions: sessionmaker[Session]) -> None:
    """Two executions of two jobs open a signature's breaker: each signature's opens at its
    own second run, whatever the other's runs between."""
    policy = parse_policy(POLICY_TEXT.replace("executions: 4, jobs: 3", "executions: 2, jobs: 2"))

    batched, one_at_a_time = decide_both_ways(sessions, policy, ("disk full", "out of memory"))

    assert batched == one_at_a_time
    assert [code for _, code, _ in one_at_a_time] == [
        "restart",
        "budget_per_job",
        "signature_open",
        "signature_open",
        "signature_open",
        "signature_open",
    ]
