"""Restart insights: counters kept as outcomes are recorded equal a rebuild from the record."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.core.ingest import ingest_and_decide, parse_deliveries
from app.core.insights import (
    ALL,
    ALL_TIME,
    ATTEMPT,
    HOST,
    JOB,
    WAIT,
    rebuild,
    record_failure,
    wait_bucket,
)
from app.core.outbox import CallResult, RetryPolicy, claim_due_restarts, record_result
from app.db import transaction
from app.models import InsightCount
from app.policy import Policy, parse_policy
from tests.feed import event, failing_run_events

NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
POLICY = """
version: 1
defaults: {backoff: {initial: 0s, jitter: 0}, max_restarts: 3, deadline: null}
limits: {per_job: null, per_account: null, global: null, per_host: null}
circuit_breaker: null
"""
RETRY = RetryPolicy(max_attempts=5, base_seconds=1.0, uncertain_seconds=10.0)
DONE = CallResult("restarted", "done", 200, "execution is PENDING")


def ms(moment: dt.datetime) -> int:
    return int(moment.timestamp() * 1000)


def deliver(
    sessions: sessionmaker[Session], items: list[dict[str, Any]], now: dt.datetime, rules: Policy
) -> None:
    with transaction(sessions) as session:
        ingest_and_decide(session, parse_deliveries(items, None, 500), now, rules, False)


def send_due(sessions: sessionmaker[Session], now: dt.datetime) -> int:
    with transaction(sessions) as session:
        claims = claim_due_restarts(session, "w", now, 60.0, 10)
    for claim in claims:
        with transaction(sessions) as session:
            record_result(session, claim, "w", DONE, now, RETRY)
    return len(claims)


def succeeding_run(execution_id: str, at: dt.datetime, prefix: str) -> list[dict[str, Any]]:
    common = {"execution_id": execution_id}
    stats = {h: {"ok": 2, "failures": 0, "unreachable": 0} for h in ("web1", "web2", "web3")}
    return [
        event("playbook_on_start", ms(at), event_id=f"{prefix}1", **common),
        event("playbook_result", ms(at) + 500, event_id=f"{prefix}2", status="SUCCESS",
              stats=stats, **common),
    ]  # fmt: skip


def other_failure_run(execution_id: str, at: dt.datetime, prefix: str) -> list[dict[str, Any]]:
    """web2 fails with another error; web3 (unreachable before) now succeeds."""
    common = {"execution_id": execution_id}
    stats = {
        "web2": {"ok": 0, "failures": 1, "unreachable": 0},
        "web3": {"ok": 2, "failures": 0, "unreachable": 0},
    }
    return [
        event("playbook_on_start", ms(at), event_id=f"{prefix}1", **common),
        event("runner_on_failed", ms(at) + 100, "web2", event_id=f"{prefix}2",
              msg="disk full on /var", rc=1, **common),
        event("playbook_result", ms(at) + 500, event_id=f"{prefix}3", status="FAILURE",
              stats=stats, **common),
    ]  # fmt: skip


def counters(
    sessions: sessionmaker[Session],
) -> dict[tuple[str, str, str, dt.date], tuple[Any, ...]]:
    with sessions() as session:
        rows = session.scalars(select(InsightCount))
        return {
            (r.signature, r.scope, r.item, r.day): (
                r.failures,
                r.restarts,
                r.hosts,
                r.settled,
                r.recovered,
                r.host_succeeded,
                r.host_failed_same,
                r.host_failed_other,
                round(r.recovery_seconds, 3),
            )
            for r in rows
        }


def play_history(sessions: sessionmaker[Session]) -> None:
    """Three executions: one recovers after one restart, one fails the same way and then
    differently, one is restarted and its run never ends."""
    rules = parse_policy(POLICY, "test.yaml")
    t = NOW
    for name in ("exec-a", "exec-b", "exec-c"):
        deliver(
            sessions, failing_run_events(ms(t), prefix=f"{name}-0", execution_id=name), t, rules
        )
    t += dt.timedelta(minutes=2)
    assert send_due(sessions, t) == 3
    t += dt.timedelta(minutes=1)
    deliver(sessions, succeeding_run("exec-a", t, "a1"), t, rules)
    deliver(sessions, failing_run_events(ms(t), prefix="exec-b-1", execution_id="exec-b"), t, rules)
    t += dt.timedelta(minutes=20)
    assert send_due(sessions, t) == 1
    t += dt.timedelta(minutes=1)
    deliver(sessions, other_failure_run("exec-b", t, "b2"), t, rules)


def test_counters_kept_as_outcomes_arrive_equal_a_rebuild(
    sessions: sessionmaker[Session],
) -> None:
    play_history(sessions)
    kept = counters(sessions)

    with transaction(sessions) as session:
        rebuilt = rebuild(session)

    assert counters(sessions) == kept
    assert (rebuilt.failures, rebuilt.restarts, rebuilt.settled) == (5, 4, 3)


def test_outcomes_are_judged_per_host_and_by_attempt(sessions: sessionmaker[Session]) -> None:
    play_history(sessions)

    rows = counters(sessions)

    totals = [v for k, v in rows.items() if k[1] == ALL]
    # failures, restarts, hosts, settled, recovered, host outcomes: same, other
    assert sum(v[0] for v in totals) == 5
    assert sum(v[1] for v in totals) == 4
    assert sum(v[3] for v in totals) == 3
    assert sum(v[4] for v in totals) == 1
    first = [v for k, v in rows.items() if k[1] == ATTEMPT and k[2] == "1"]
    second = [v for k, v in rows.items() if k[1] == ATTEMPT and k[2] == "2"]
    assert sum(v[1] for v in first) == 3
    assert sum(v[1] for v in second) == 1
    # exec-b's second restart: web2 failed differently, web3 succeeded
    assert sum(v[6] for v in second) == 0
    assert sum(v[7] for v in second) == 1
    assert sum(v[5] for v in second) == 1
    hosts = {k[2] for k in rows if k[1] == HOST}
    assert hosts == {"web2", "web3"}
    waits = {k[2] for k in rows if k[1] == WAIT}
    assert waits == {str(wait_bucket(120))}


def test_a_rebuild_after_the_counters_were_lost_restores_them(
    sessions: sessionmaker[Session],
) -> None:
    play_history(sessions)
    kept = counters(sessions)
    with transaction(sessions) as session:
        for row in session.scalars(select(InsightCount)):
            session.delete(row)

    with transaction(sessions) as session:
        rebuild(session)

    assert counters(sessions) == kept


def test_counts_are_written_at_commit_and_a_rollback_drops_them(
    sessions: sessionmaker[Session],
) -> None:
    """A transaction's counts go in with its commit (gathered, one upsert), or not at all."""
    key = ("sig-1", ALL, "", NOW.date())

    class Abandoned(Exception):
        pass

    with pytest.raises(Abandoned), transaction(sessions) as session:
        record_failure(session, "sig-1", "job-1", NOW)
        raise Abandoned
    assert key not in counters(sessions)

    with transaction(sessions) as session:
        record_failure(session, "sig-1", "job-1", NOW)
        record_failure(session, "sig-1", "job-2", NOW)
    with transaction(sessions) as session:
        record_failure(session, "sig-1", "job-1", NOW)
    found = counters(sessions)
    assert found[key][0] == 3
    assert found[("sig-1", JOB, "job-1", ALL_TIME)][0] == 2
    assert found[("sig-1", JOB, "job-2", ALL_TIME)][0] == 1

    with sessions() as session:  # the same session after a rollback starts afresh
        with session.begin():
            record_failure(session, "sig-2", "job-1", NOW)
            session.rollback()
        with session.begin():
            record_failure(session, "sig-2", "job-1", NOW)
    assert counters(sessions)[("sig-2", ALL, "", NOW.date())][0] == 1
