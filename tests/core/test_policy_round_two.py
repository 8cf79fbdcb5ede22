"""Policy round two in the record, on SQLite and PostgreSQL: a run that failed as a whole is
skipped as systemic, a burst of one error signature across jobs holds restarts until its
breaker closes (then releases them in order, or drops what its deadline no longer allows),
and blackout windows defer restarts to their end in local time, across DST changes too."""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.core.backtest import run_backtest
from app.core.decisions import decide_failed_runs
from app.core.ingest import ingest_and_decide, parse_deliveries
from app.core.outbox import claim_due_restarts
from app.core.signatures import close_signature, open_signatures, release_held
from app.db import transaction
from app.models import AuditEntry, Decision, Execution, ExecutionRun, Restart
from app.policy import Policy, parse_policy
from tests.feed import GIT_ERROR, SIGNATURE_POLICY, event, ms, run_events

BERLIN = ZoneInfo("Europe/Berlin")
OTHERS = ("app1", "app2", "app3")
"""Hosts that succeed beside the failing one: a run that failed in part, not as a whole."""

SYSTEMIC_POLICY = """
version: 1
defaults: {backoff: {initial: 0s}}
rules:
  - name: infra-down
    when: {failed_hosts: {ratio_over: 0.5}}
    action: skip
"""

BLACKOUT_POLICY = """
version: 1
defaults: {backoff: {initial: 30s, jitter: 0}, deadline: 12h}
rules:
  - name: emergency
    when: {job: "emergency-*"}
    ignore_blackouts: true
schedule:
  blackouts:
    - {name: nightly, days: [mon, tue, wed, thu, fri, sat, sun], from: "23:00", to: "06:00",
       tz: Europe/Berlin}
"""


def feed(
    sessions: sessionmaker[Session], items: list[dict[str, Any]], now: dt.datetime, policy: Policy
) -> None:
    with transaction(sessions) as session:
        ingest_and_decide(session, parse_deliveries(items, None, 500), now, policy, False)


def restarts_of(session: Session, execution_id: str) -> list[Restart]:
    return list(
        session.scalars(
            select(Restart)
            .join(Execution, Execution.id == Restart.execution_pk)
            .where(Execution.execution_id == execution_id)
            .order_by(Restart.id)
        )
    )


def decisions_of(session: Session, execution_id: str) -> list[Decision]:
    return list(
        session.scalars(
            select(Decision)
            .join(Execution, Execution.id == Decision.execution_pk)
            .where(Execution.execution_id == execution_id)
            .order_by(Decision.id)
        )
    )


# --- systemic failures ------------------------------------------------------------------------


def test_a_run_where_most_hosts_failed_is_skipped_as_systemic(
    sessions: sessionmaker[Session],
) -> None:
    policy = parse_policy(SYSTEMIC_POLICY)
    now = dt.datetime.now(dt.UTC)
    failed = {f"web{n}": "ERROR: could not resolve host" for n in range(6)}
    ok = tuple(f"web{n}" for n in range(6, 10))

    feed(sessions, run_events("exec-wide", "job-1", now, failed, ok), now, policy)
    feed(
        sessions,
        run_events("exec-narrow", "job-1", now, dict(list(failed.items())[:2]), ok),
        now,
        policy,
    )

    with sessions() as session:
        (wide,) = decisions_of(session, "exec-wide")
        (narrow,) = decisions_of(session, "exec-narrow")
        host_count = session.scalar(
            select(ExecutionRun.host_count)
            .join(Execution, Execution.id == ExecutionRun.execution_pk)
            .where(Execution.execution_id == "exec-wide")
        )
        assert restarts_of(session, "exec-wide") == []
    assert host_count == 10
    assert (wide.action, wide.reason_code, wide.rule) == ("skip", "systemic", "infra-down")
    assert "6 of 10" in wide.reason
    # 2 of 6 hosts failed: not systemic, the defaults restart it.
    assert (narrow.action, narrow.rule) == ("restart", "defaults")


# --- the error-signature breaker ------------------------------------------------------------


def git_burst(
    sessions: sessionmaker[Session], policy: Policy, start: dt.datetime, count: int
) -> list[str]:
    """`count` executions of 4 jobs failing with the same git error (its numbers and names
    varying), 30 s apart."""
    ids = []
    for n in range(count):
        execution_id = f"exec-git-{n}"
        stderr = GIT_ERROR.format(n=n, ms=1000 + 37 * n)
        at = start + dt.timedelta(seconds=30 * n)
        items = run_events(execution_id, f"job-{n % 4}", at, {f"web{n}": stderr}, OTHERS)
        feed(sessions, items, at, policy)
        ids.append(execution_id)
    return ids


def test_a_burst_of_one_signature_across_jobs_holds_restarts_until_it_closes(
    sessions: sessionmaker[Session],
) -> None:
    policy = parse_policy(SIGNATURE_POLICY)
    start = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=3)

    ids = git_burst(sessions, policy, start, 6)

    with sessions() as session:
        first = [decisions_of(session, e)[0] for e in ids]
        keys = {d.signature for d in first}
        assert len(keys) == 1 and None not in keys  # one signature, whatever the numbers
        # Four executions: below the threshold, restarts queued as usual...
        assert [d.action for d in first] == ["restart"] * 4 + ["held"] * 2
        assert {d.reason_code for d in first[4:]} == {"signature_open"}
        # ... and held with the fifth, since none was sent yet.
        states = [r.state for e in ids for r in restarts_of(session, e)]
        assert states == ["held"] * 6
        (view,) = open_signatures(session, policy, start + dt.timedelta(minutes=3))
        assert (view.open, view.executions, view.held) == (True, 6, 6)
        assert len(view.jobs) == 4
        assert "git0" not in view.text and "443" not in view.text  # the varying parts masked
        claimed = claim_due_restarts(session, "w1", start + dt.timedelta(minutes=5), 60.0, 10)
        assert claimed == []  # held rows are not due, whatever their time
        session.rollback()

    # Five executions of three jobs stay inside 10 minutes until the second failure leaves
    # the window (at +10m30s); the breaker closes 15 minutes after that.
    until = start + dt.timedelta(seconds=30) + dt.timedelta(minutes=10 + 15)
    with transaction(sessions) as session:
        early = release_held(session, policy, until - dt.timedelta(seconds=1))
    assert (early.released, early.dropped) == (0, 0)

    with transaction(sessions) as session:
        done = release_held(session, policy, until)
    assert (done.released, done.dropped) == (6, 0)
    with sessions() as session:
        restarts = [restarts_of(session, e)[0] for e in ids]
        assert [r.state for r in restarts] == ["pending"] * 6
        assert all(r.due_at <= until for r in restarts)
        releases = [decisions_of(session, e)[-1] for e in ids]
        assert {(d.origin, d.action) for d in releases} == {("release", "restart")}
        # Released in the order they were queued.
        assert [d.id for d in releases] == sorted(d.id for d in releases)
        assert claim_due_restarts(session, "w1", until, 60.0, 10) != []


def test_a_held_restart_past_its_deadline_is_dropped_when_released(
    sessions: sessionmaker[Session],
) -> None:
    policy = parse_policy(SIGNATURE_POLICY.replace("deadline: 2h", "deadline: 20m"))
    start = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)

    ids = git_burst(sessions, policy, start, 5)
    with transaction(sessions) as session:
        done = release_held(session, policy, start + dt.timedelta(minutes=40))

    assert (done.released, done.dropped) == (0, 5)
    with sessions() as session:
        restart = restarts_of(session, ids[0])[0]
        assert (restart.state, restart.outcome) == ("not_needed", "dropped")
        release = decisions_of(session, ids[0])[-1]
        assert (release.origin, release.action, release.reason_code) == (
            "release",
            "skip",
            "deadline",
        )


def test_closing_a_signature_by_hand_releases_what_it_held_and_is_audited(
    sessions: sessionmaker[Session],
) -> None:
    policy = parse_policy(SIGNATURE_POLICY)
    start = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=3)
    ids = git_burst(sessions, policy, start, 5)
    now = start + dt.timedelta(minutes=3)
    with sessions() as session:
        key = decisions_of(session, ids[0])[0].signature
    assert key is not None

    with transaction(sessions) as session:
        _, released = close_signature(session, key, "olivia", now, policy)

    assert released.released == 5
    with sessions() as session:
        assert open_signatures(session, policy, now) == []
        (audit,) = session.scalars(select(AuditEntry).where(AuditEntry.action == "close_signature"))
        assert (audit.actor, audit.target) == ("olivia", key)
    # Failures before the close no longer count: one more failure is restarted, not held.
    feed(
        sessions,
        run_events("exec-git-after", "job-9", now, {"web9": GIT_ERROR.format(n=9, ms=5)}),
        now,
        policy,
    )
    with sessions() as session:
        (after,) = decisions_of(session, "exec-git-after")
    assert after.action == "restart"


def test_a_held_restart_whose_execution_moved_on_is_not_sent(
    sessions: sessionmaker[Session],
) -> None:
    policy = parse_policy(SIGNATURE_POLICY)
    start = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=40)
    ids = git_burst(sessions, policy, start, 5)
    # The first execution was restarted by someone else and succeeded meanwhile.
    t = start + dt.timedelta(minutes=5)
    common = {"execution_id": ids[0], "job_id": "job-0", "account": "XXXX"}
    feed(
        sessions,
        [
            event("playbook_on_start", ms(t), event_id="again-s", **common),
            event("playbook_result", ms(t) + 500, event_id="again-r", status="SUCCESS", **common),
        ],
        t,
        policy,
    )

    with transaction(sessions) as session:
        done = release_held(session, policy, start + dt.timedelta(minutes=30))

    assert (done.released, done.dropped) == (4, 1)
    with sessions() as session:
        restart = restarts_of(session, ids[0])[0]
    assert (restart.state, restart.outcome) == ("not_needed", "superseded")


def test_backtest_counts_what_the_guards_would_have_held_and_saved(
    sessions: sessionmaker[Session],
) -> None:
    plain = parse_policy("version: 1\ndefaults: {backoff: {initial: 30s}}\n")
    start = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    git_burst(sessions, plain, start, 6)
    failed = {f"web{n}": "ERROR: could not resolve host" for n in range(6)}
    feed(sessions, run_events("exec-wide", "job-1", start, failed, ("a", "b")), start, plain)
    candidate = parse_policy(SIGNATURE_POLICY + SYSTEMIC_POLICY.split("\n", 3)[3])

    report = run_backtest(
        sessions, candidate, start - dt.timedelta(minutes=1), dt.datetime.now(dt.UTC)
    )

    assert report.current.restarts == 7
    assert report.candidate.held == 2
    assert report.candidate.skips.get("systemic") == 1
    assert report.saved == 3  # restarted then: two held, one skipped as systemic


# --- blackout windows -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("failed_at", "due_local"),
    [
        # an ordinary night
        (dt.datetime(2026, 6, 10, 23, 55, tzinfo=BERLIN), dt.datetime(2026, 6, 11, 6, 0)),
        # clocks go forward at 02:00 on 29 March 2026: 06:00 CEST is 04:00 UTC
        (dt.datetime(2026, 3, 28, 23, 55, tzinfo=BERLIN), dt.datetime(2026, 3, 29, 6, 0)),
        # clocks go back at 03:00 on 25 October 2026: 06:00 CET is 05:00 UTC
        (dt.datetime(2026, 10, 24, 23, 55, tzinfo=BERLIN), dt.datetime(2026, 10, 25, 6, 0)),
    ],
)
def test_a_failure_inside_a_blackout_restarts_at_its_end_in_local_time(
    sessions: sessionmaker[Session], failed_at: dt.datetime, due_local: dt.datetime
) -> None:
    policy = parse_policy(BLACKOUT_POLICY)
    now = failed_at.astimezone(dt.UTC)

    feed(sessions, run_events("exec-night", "job-1", now, {"web1": "boom"}), now, policy)
    feed(
        sessions,
        run_events("emergency-night", "emergency-db", now, {"db1": "boom"}),
        now,
        policy,
    )

    due = due_local.replace(tzinfo=BERLIN).astimezone(dt.UTC)
    with sessions() as session:
        (decision,) = decisions_of(session, "exec-night")
        (restart,) = restarts_of(session, "exec-night")
        (urgent,) = restarts_of(session, "emergency-night")
        assert (decision.action, decision.deferred_by) == ("restart", "nightly")
        assert restart.due_at == due
        assert urgent.due_at == now + dt.timedelta(seconds=30)  # ignore_blackouts
        just_before = claim_due_restarts(session, "w1", due - dt.timedelta(seconds=1), 60.0, 10)
        assert [c.execution_id for c in just_before] == ["emergency-night"]
        session.rollback()
        at_the_end = claim_due_restarts(session, "w1", due, 60.0, 10)
        assert sorted(c.execution_id for c in at_the_end) == ["emergency-night", "exec-night"]
        session.rollback()


def test_a_blackout_that_outlasts_the_deadline_drops_the_restart(
    sessions: sessionmaker[Session],
) -> None:
    policy = parse_policy(BLACKOUT_POLICY.replace("deadline: 12h", "deadline: 2h"))
    now = dt.datetime(2026, 6, 10, 23, 55, tzinfo=BERLIN).astimezone(dt.UTC)

    feed(sessions, run_events("exec-night", "job-1", now, {"web1": "boom"}), now, policy)

    with sessions() as session:
        (decision,) = decisions_of(session, "exec-night")
        assert restarts_of(session, "exec-night") == []
    assert (decision.action, decision.reason_code) == ("skip", "blackout")


def test_undecided_failures_are_decided_with_the_same_guards(
    sessions: sessionmaker[Session],
) -> None:
    """The background's second chance (deferred jobs) goes through the same engine input."""
    policy = parse_policy(SYSTEMIC_POLICY)
    now = dt.datetime.now(dt.UTC)
    failed = {f"web{n}": "x" for n in range(3)}
    with transaction(sessions) as session:
        ingest_and_decide(
            session,
            parse_deliveries(run_events("exec-late", "job-1", now, failed, ("a",)), None, 500),
            now,
            parse_policy("version: 1\nrules:\n  - {name: wait, when: {job: 'never-*'}}\n"),
            True,
        )
    with transaction(sessions) as session:
        pending = session.scalars(select(Execution).where(Execution.execution_id == "exec-late"))
        decide_failed_runs(session, pending, now, policy)
    with sessions() as session:
        (decision,) = decisions_of(session, "exec-late")
    assert decision.reason_code == "systemic"
