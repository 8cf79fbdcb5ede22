"""The decision's inputs counted at their edges: budgets, host history, breaker outcomes, pauses.

These tests kill the mutants of the functions of app/core/stats.py that the decisions read
(docs/TESTING.md): what each window includes (its start included), which restarts count, by
job, account or fleet, and what a pause says.
"""

from __future__ import annotations

import datetime as dt
import itertools
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import insert, select
from sqlalchemy.orm import Session, sessionmaker

from app.core.history import host_failure_times
from app.core.ingest import ingest_and_decide, parse_deliveries
from app.core.operator import pause_automatic
from app.core.stats import (
    as_utc,
    budget_count,
    budget_usage,
    pause_reason,
    pauses_for,
    restart_outcomes,
)
from app.db import transaction
from app.models import Decision, Execution, HostFailure, Restart
from app.policy import BudgetUsage, RestartOutcome, parse_policy
from tests.feed import failing_run_events

NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
T0 = int(NOW.timestamp() * 1000) - 7_200_000
SKIP_ALL = parse_policy("version: 1\ndefaults: {action: skip}\n", "test.yaml")
LIMITS = parse_policy(
    "version: 1\nlimits:\n  per_job: {restarts: 9, window: 1h}\n"
    "  per_account: {restarts: 9, window: 2h}\n  global: {restarts: 9, window: 3h}\n"
    "  per_host: {failures: 2, window: 1h, quarantine: 30m}\n"
    "circuit_breaker: {window: 15m, cool_down: 10m, min_restarts: 2, failure_ratio: 0.5}\n",
    "test.yaml",
)
KEYS = itertools.count(1)
OFF = parse_policy(
    "version: 1\nlimits: {per_job: null, per_account: null, global: null, per_host: null}\n"
    "circuit_breaker: null\n",
    "test.yaml",
)


def execution(
    sessions: sessionmaker[Session], execution_id: str, job_id: str = "job-1", account: str = "A"
) -> int:
    feed = failing_run_events(
        T0, ("web2",), prefix=execution_id, execution_id=execution_id, job_id=job_id,
        account=account,
    )  # fmt: skip
    with transaction(sessions) as session:
        ingest_and_decide(session, parse_deliveries(feed, None, 500), NOW, SKIP_ALL, False)
        return session.scalars(
            select(Execution.id).where(Execution.execution_id == execution_id)
        ).one()


def add_restart(
    sessions: sessionmaker[Session],
    execution_pk: int,
    created_at: dt.datetime = NOW,
    *,
    manual: bool = False,
    counts: bool = True,
    state: str = "pending",
    result: str | None = None,
    result_at: dt.datetime | None = None,
) -> None:
    with transaction(sessions) as session:
        decision = Decision(
            execution_pk=execution_pk, run_index=0, decision_key=f"test:{next(KEYS)}",
            origin="policy", action="restart", hosts=[], excluded_hosts=[], due_at=created_at,
            backoff_seconds=0.0, rule="default", reason_code="restart", reason="test",
            policy_version="test", created_at=created_at,
        )  # fmt: skip
        session.add(decision)
        session.flush()
        session.add(
            Restart(
                decision_id=decision.id, execution_pk=execution_pk, run_index=0, manual=manual,
                counts_against_budget=counts, state=state, hosts=[], due_at=created_at,
                attempts=0, timers_before=1, created_at=created_at, updated_at=created_at,
                result=result, result_at=result_at,
            )
        )  # fmt: skip


def ago(**delta: float) -> dt.datetime:
    return NOW - dt.timedelta(**delta)


def test_a_budget_window_includes_its_start_and_nothing_before(
    sessions: sessionmaker[Session],
) -> None:
    pk = execution(sessions, "exec-a")
    add_restart(sessions, pk, ago(hours=1))
    add_restart(sessions, pk, ago(hours=1, seconds=1))

    with sessions() as session:
        assert budget_count(session, ago(hours=1)) == 1


@pytest.mark.parametrize(
    ("state", "counted"),
    [("pending", 1), ("in_flight", 1), ("done", 1), ("failed", 0), ("cancelled", 0),
     ("not_needed", 0)],
)  # fmt: skip
def test_a_budget_counts_restarts_queued_or_sent(
    sessions: sessionmaker[Session], state: str, counted: int
) -> None:
    add_restart(sessions, execution(sessions, "exec-a"), state=state)

    with sessions() as session:
        assert budget_count(session, ago(hours=1)) == counted


def test_a_budget_counts_by_job_by_account_or_all(sessions: sessionmaker[Session]) -> None:
    add_restart(sessions, execution(sessions, "exec-a", job_id="job-1", account="A"))
    add_restart(sessions, execution(sessions, "exec-b", job_id="job-1", account="B"))
    add_restart(sessions, execution(sessions, "exec-c", job_id="job-2", account="A"))
    add_restart(sessions, execution(sessions, "exec-d", job_id="job-3", account="C"))

    with sessions() as session:
        since = ago(hours=1)
        assert budget_count(session, since) == 4
        assert budget_count(session, since, job_id="job-1") == 2
        assert budget_count(session, since, account="A") == 2
        assert budget_count(session, since, job_id="job-1", account="A") == 1
        assert budget_count(session, since, job_id="job-9") == 0


def test_each_budget_is_counted_over_its_own_window(sessions: sessionmaker[Session]) -> None:
    mine = execution(sessions, "exec-a", job_id="job-1", account="A")
    other_job = execution(sessions, "exec-b", job_id="job-2", account="A")
    elsewhere = execution(sessions, "exec-c", job_id="job-3", account="B")
    add_restart(sessions, mine, ago(minutes=30))
    add_restart(sessions, mine, ago(minutes=90))  # outside the job's hour
    add_restart(sessions, other_job, ago(minutes=100))
    add_restart(sessions, elsewhere, ago(minutes=20))  # another job and account, recent
    add_restart(sessions, elsewhere, ago(minutes=150))  # only the global 3h sees it
    add_restart(sessions, elsewhere, ago(minutes=200))  # nobody sees it

    with sessions() as session:
        target = session.get(Execution, mine)
        assert target is not None
        usage = budget_usage(session, LIMITS, target, NOW)
        assert usage == BudgetUsage(per_job=1, per_account=3, global_=5)
        assert budget_usage(session, OFF, target, NOW) == BudgetUsage(0, 0, 0)


def add_failure(sessions: sessionmaker[Session], pk: int, host: str, at: dt.datetime) -> None:
    with transaction(sessions) as session:
        session.add(
            HostFailure(
                execution_pk=pk,
                run_index=next(KEYS),
                host=host,
                failure_class="unknown",
                occurred_at=at,
            )
        )


def test_host_history_reaches_back_a_window_and_a_quarantine(
    sessions: sessionmaker[Session],
) -> None:
    pk = execution(sessions, "exec-a")  # web2 failed two hours ago: too old
    add_failure(sessions, pk, "web1", ago(minutes=90))  # window 1h + quarantine 30m: included
    add_failure(sessions, pk, "web1", ago(minutes=10))
    add_failure(sessions, pk, "web1", ago(minutes=90, seconds=1))
    add_failure(sessions, pk, "web4", ago(minutes=5))

    with sessions() as session:
        history = host_failure_times(session, LIMITS, ["web1", "web2", "web3"], NOW)
        assert history == {
            "web1": (ago(minutes=90), ago(minutes=10)),
            "web2": (),
            "web3": (),
        }
        assert host_failure_times(session, LIMITS, [], NOW) == {}
        assert host_failure_times(session, OFF, ["web1"], NOW) == {}


def test_the_breaker_sees_finished_automatic_restarts_oldest_first(
    sessions: sessionmaker[Session],
) -> None:
    pk = execution(sessions, "exec-a")
    add_restart(sessions, pk, state="done", result="succeeded", result_at=ago(minutes=5))
    add_restart(sessions, pk, state="done", result="failed_again", result_at=ago(minutes=25))
    add_restart(sessions, pk, state="done", result="failed_again", result_at=ago(minutes=26))
    add_restart(sessions, pk, state="done", manual=True, result="failed_again", result_at=NOW)
    add_restart(sessions, pk, state="done")  # not finished yet

    with sessions() as session:
        assert restart_outcomes(session, LIMITS, NOW) == (
            RestartOutcome(ago(minutes=25), True),  # window 15m + cool-down 10m: included
            RestartOutcome(ago(minutes=5), False),
        )
        assert restart_outcomes(session, OFF, NOW) == ()


def test_a_pause_says_who_paused_and_where(sessions: sessionmaker[Session]) -> None:
    with transaction(sessions) as session:
        pause_automatic(session, "job-1", "alice", NOW)
        pause_automatic(session, "job-9", "bob", NOW)

    with sessions() as session:
        assert set(pauses_for(session, "job-1")) == {"job-1"}
        assert pause_reason(session, "job-1") == ("automatic restarts paused for this job by alice")
        assert pause_reason(session, "job-2") is None
        assert pauses_for(session, None) == {}
    with transaction(sessions) as session:
        pause_automatic(session, None, "carol", NOW)
    with sessions() as session:
        assert set(pauses_for(session, "job-1")) == {"", "job-1"}
        assert set(pauses_for(session, None)) == {""}
        assert pause_reason(session, "job-1") == "automatic restarts paused globally by carol"


def test_moments_from_the_database_are_made_aware_in_utc() -> None:
    plus_two = dt.timezone(dt.timedelta(hours=2))
    assert as_utc("2026-03-01 12:00:00") == NOW
    assert as_utc(dt.datetime(2026, 3, 1, 12, 0)) == NOW
    assert as_utc(dt.datetime(2026, 3, 1, 14, 0, tzinfo=plus_two)).tzinfo == dt.UTC
    assert as_utc(dt.datetime(2026, 3, 1, 14, 0, tzinfo=plus_two)) == NOW
    with pytest.raises(TypeError, match="expected a datetime from the database, got int"):
        as_utc(5)


@pytest.fixture
def new_york(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The machine's local time zone is not UTC."""
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.usefixtures("new_york")
def test_moments_are_utc_whatever_the_machines_time_zone() -> None:
    plus_two = dt.timezone(dt.timedelta(hours=2))

    naive = as_utc(dt.datetime(2026, 3, 1, 12, 0))
    aware = as_utc(dt.datetime(2026, 3, 1, 14, 0, tzinfo=plus_two))

    assert (naive, naive.utcoffset()) == (NOW, dt.timedelta(0))
    assert (aware, aware.utcoffset()) == (NOW, dt.timedelta(0))


def flapping(sessions: sessionmaker[Session], pk: int, host: str) -> list[dt.datetime]:
    """1,001 failures of `host` from an hour ago on, a second apart; their times, oldest
    first."""
    times = [ago(minutes=60) + dt.timedelta(seconds=n) for n in range(1001)]
    with transaction(sessions) as session:
        session.execute(
            insert(HostFailure),
            [
                {"execution_pk": pk, "run_index": 10 + n, "host": host,
                 "failure_class": "unknown", "occurred_at": at}
                for n, at in enumerate(times)
            ],
        )  # fmt: skip
    return times


def test_host_history_keeps_the_latest_five_hundred_failures_per_host(
    sessions: sessionmaker[Session],
) -> None:
    pk = execution(sessions, "exec-a")
    times = flapping(sessions, pk, "web1")

    with sessions() as session:
        history = host_failure_times(session, LIMITS, ["web1", "web2"], NOW)

    assert history["web1"] == tuple(times[-500:])
    assert history["web2"] == ()


def test_a_host_failing_often_crowds_out_no_other_hosts_history(
    sessions: sessionmaker[Session],
) -> None:
    """Asked about together (a batch of decisions), each host still gets its own latest
    failures, however many more another host has had since."""
    pk = execution(sessions, "exec-a")
    quiet = ago(minutes=80)
    add_failure(sessions, pk, "web2", quiet)
    times = flapping(sessions, pk, "web1")

    with sessions() as session:
        history = host_failure_times(session, LIMITS, ["web1", "web2"], NOW)

    assert history == {"web1": tuple(times[-500:]), "web2": (quiet,)}
