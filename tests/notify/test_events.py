"""Every kind of event the record tells, from its real cause, on SQLite and PostgreSQL: each
notification carries the execution, the job (id and description), the account, the hosts,
the rule and the reason where they apply, and reaches the receiver with a link to the
execution's admin page."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from app.core.ingest import ingest_and_decide, parse_deliveries
from app.core.outbox import CallResult, RetryPolicy, claim_due_restarts, record_result
from app.core.watch import watch
from app.db import transaction
from app.models import Notification, Restart
from app.policy import Policy
from tests.feed import GIT_ERROR, failing_run_events, ms, run_events
from tests.notify.conftest import (
    BASE_POLICY,
    PUBLIC_URL,
    Receivers,
    add_job,
    deliver_due,
    feed,
    notifications,
)

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
JOB, ACCOUNT, DESCRIPTION = "job-shop-1", "ACME", "deploy the shop"


def execution_id(n: int) -> str:
    return f"{n:08d}-0000-4000-8000-00000000e0e0"


def fail(
    sessions: sessionmaker[Session],
    policy: Policy,
    n: int,
    at: dt.datetime = NOW,
    *,
    job_id: str = JOB,
    account: str = ACCOUNT,
) -> str:
    """Execution n's first run fails on web2 and web3 at `at`; decided at NOW."""
    items = failing_run_events(
        ms(at) - 10_000, ("web2", "web3"), prefix=f"e{n}-", execution_id=execution_id(n),
        job_id=job_id, account=account,
    )  # fmt: skip
    feed(sessions, items, NOW, policy)
    return execution_id(n)


def data_of(row: Notification) -> dict[str, Any]:
    data: dict[str, Any] = row.payload["data"]
    return data


def link(execution: str) -> str:
    return f"{PUBLIC_URL}/admin/executions/{execution}"


# --- gave up ----------------------------------------------------------------------------------

LIMITS_OFF = "limits: {per_job: null, per_account: null, global: null, per_host: null}\n"


def _blackout_now() -> str:
    start, end = NOW - dt.timedelta(hours=1), NOW + dt.timedelta(hours=3)
    return (
        "defaults: {backoff: {initial: 0s}, deadline: 1h}\n" + LIMITS_OFF + "schedule:\n"
        f"  blackouts: [{{name: freeze, from: '{start:%H:%M}', to: '{end:%H:%M}'}}]\n"
    )


GAVE_UP = {
    # cause: (the policy after `version: 1`, executions failing, when they failed, rule)
    "max_restarts": ("defaults: {max_restarts: 0}\n" + LIMITS_OFF, 1, NOW, "defaults"),
    "deadline": (
        "defaults: {deadline: 1h}\n" + LIMITS_OFF,
        1,
        NOW - dt.timedelta(hours=2),
        "defaults",
    ),
    "budget_per_job": (
        "limits: {per_job: {restarts: 1, window: 1h}, per_account: null, global: null,"
        " per_host: null}\n",
        2,
        NOW,
        "defaults",
    ),
    "budget_per_account": (
        "limits: {per_job: null, per_account: {restarts: 1, window: 1h}, global: null,"
        " per_host: null}\n",
        2,
        NOW,
        "defaults",
    ),
    "budget_global": (
        "limits: {per_job: null, per_account: null, global: {restarts: 1, window: 1h},"
        " per_host: null}\n",
        2,
        NOW,
        "defaults",
    ),
    "quarantine": (
        "limits: {per_job: null, per_account: null, global: null,"
        " per_host: {failures: 1, window: 1h, quarantine: 1h}}\n",
        1,
        NOW,
        "defaults",
    ),
    "blackout": (_blackout_now(), 1, NOW, "defaults"),
    "rule_skip": (
        LIMITS_OFF + "rules:\n  - {name: hands-off, when: {account: ACME}, action: skip,"
        " notify: true}\n",
        1,
        NOW,
        "hands-off",
    ),
}


@pytest.mark.parametrize("cause", list(GAVE_UP))
def test_giving_up_is_told_with_everything_about_the_failure(
    sessions: sessionmaker[Session], receivers: Receivers, cause: str
) -> None:
    body, executions, at, rule = GAVE_UP[cause]
    policy = receivers.policy(body="version: 1\n" + body, default="[oncall, chat, mail]")
    add_job(sessions, JOB, DESCRIPTION, ACCOUNT)

    ids = [fail(sessions, policy, n, at) for n in range(executions)]

    gave_up = notifications(sessions, kind="gave_up", channel="oncall")
    assert len(gave_up) == 1
    (row,) = gave_up
    data = data_of(row)
    assert data["reason_code"] == cause
    assert data["execution_id"] == ids[-1]
    assert (data["job_id"], data["job_description"], data["account"]) == (
        JOB,
        DESCRIPTION,
        ACCOUNT,
    )
    assert data["hosts"] == ["web2", "web3"]
    assert data["rule"] == rule and data["reason"]
    assert row.summary == f"gave up on {ids[-1]}: {data['reason']}"[:500]

    assert sorted(deliver_due(sessions, policy, NOW)) == ["sent"] * 3
    (got,) = receivers.hook.unique()
    assert got.json["data"]["link"] == link(ids[-1])
    assert got.json["data"]["reason_code"] == cause
    (slack,) = receivers.hook.accepted("/services/")
    assert f"<{link(ids[-1])}|Open in respawn>" in str(slack.json["blocks"])
    fields = str(slack.json["blocks"][2]["fields"])
    assert DESCRIPTION in fields and "web2, web3" in fields and ACCOUNT in fields
    (mail,) = receivers.smtp.mails
    assert f"Open in respawn: {link(ids[-1])}" in mail.plain
    assert f"Description: {DESCRIPTION}" in mail.plain and f"Rule: {rule}" in mail.plain


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_skip_the_operators_chose_is_not_told_unless_the_rule_asks(
    sessions: sessionmaker[Session], receivers: Receivers
) -> None:
    quiet = "rules:\n  - {name: hands-off, when: {account: ACME}, action: skip}\n"
    policy = receivers.policy(body="version: 1\n" + LIMITS_OFF + quiet)

    fail(sessions, policy, 1)

    assert notifications(sessions) == []


# --- restarts ---------------------------------------------------------------------------------

RESTART_POLICY = BASE_POLICY + "rules:\n  - {name: shop, when: {job: 'deploy the *'}}\n"


def claim(sessions: sessionmaker[Session]) -> Any:
    with transaction(sessions) as session:
        (claimed,) = claim_due_restarts(session, "w1", NOW, 60.0, 10)
    return claimed


@pytest.mark.parametrize(
    ("result", "kind", "attempts"),
    [
        (CallResult("restarted", "done", 200, "accepted: run 2 queued"), "restart_sent", 3),
        (CallResult("rejected", "failed", 400, "Runner refused: bad hosts"), "restart_failed", 3),
        (CallResult("unavailable", "retry", 503, "Runner answered 503"), "restart_failed", 1),
    ],
    ids=["sent", "refused", "retries-exhausted"],
)
def test_a_restart_sent_or_failed_is_told_with_the_runners_answer(
    sessions: sessionmaker[Session],
    receivers: Receivers,
    result: CallResult,
    kind: str,
    attempts: int,
) -> None:
    policy = receivers.policy(body=RESTART_POLICY)
    add_job(sessions, JOB, DESCRIPTION, ACCOUNT)
    execution = fail(sessions, policy, 1)
    claimed = claim(sessions)

    with transaction(sessions) as session:
        record_result(session, claimed, "w1", result, NOW, RetryPolicy(attempts, 1.0, 1.0), policy)

    (row,) = notifications(sessions)
    data = data_of(row)
    assert row.kind == kind
    assert (data["execution_id"], data["job_id"], data["account"]) == (execution, JOB, ACCOUNT)
    assert data["job_description"] == DESCRIPTION
    assert data["hosts"] == ["web2", "web3"]
    assert data["rule"] == "shop" and data["reason"]
    assert data["status_code"] == result.status_code
    assert result.detail in data["runner_answer"]
    if kind == "restart_sent":
        assert row.summary == f"restarted {execution} (web2, web3): {result.detail}"
    else:
        assert row.summary.startswith(f"restart of {execution} failed: ")
    assert deliver_due(sessions, policy, NOW) == ["sent"]
    (got,) = receivers.hook.unique()
    assert got.json["type"] == kind and got.json["data"]["link"] == link(execution)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_retry_of_a_restart_tells_nothing_yet(
    sessions: sessionmaker[Session], receivers: Receivers
) -> None:
    policy = receivers.policy(body=RESTART_POLICY)
    fail(sessions, policy, 1)
    claimed = claim(sessions)

    with transaction(sessions) as session:
        retry = CallResult("unavailable", "retry", 503, "Runner answered 503")
        record_result(session, claimed, "w1", retry, NOW, RetryPolicy(3, 1.0, 1.0), policy)

    assert notifications(sessions) == []


# --- what respawn watches: quarantine and breakers ------------------------------------------


def test_a_host_entering_and_leaving_quarantine_is_told_once_each(
    sessions: sessionmaker[Session], receivers: Receivers
) -> None:
    limits = (
        "version: 1\ndefaults: {backoff: {initial: 0s}}\n"
        "limits: {per_job: null, per_account: null, global: null,"
        " per_host: {failures: 2, window: 1h, quarantine: 30m}}\n"
    )
    policy = receivers.policy(body=limits)
    fail(sessions, policy, 1, NOW - dt.timedelta(minutes=2))
    with transaction(sessions) as session:
        assert watch(session, policy, NOW) == 0  # one failure each: nobody quarantined
    fail(sessions, policy, 2, NOW - dt.timedelta(minutes=1))

    with transaction(sessions) as session:
        assert watch(session, policy, NOW) == 2
    with transaction(sessions) as session:
        assert watch(session, policy, NOW + dt.timedelta(minutes=5)) == 0  # told already
    with transaction(sessions) as session:
        assert watch(session, policy, NOW + dt.timedelta(minutes=31)) == 2

    rows = [r for r in notifications(sessions) if r.kind.startswith("host_")]
    assert [(r.kind, data_of(r)["hosts"]) for r in rows] == [
        ("host_quarantined", ["web2"]),
        ("host_quarantined", ["web3"]),
        ("host_released", ["web2"]),
        ("host_released", ["web3"]),
    ]
    assert rows[0].summary.startswith("host web2 quarantined until ")
    assert data_of(rows[0])["failures"] == 2
    assert rows[2].summary == "host web2 left quarantine: it is restarted again"
    deliver_due(sessions, policy, NOW + dt.timedelta(minutes=31))
    assert sorted(r.json["type"] for r in receivers.hook.unique()) == [
        "gave_up",  # the second failure's hosts were all quarantined
        "host_quarantined",
        "host_quarantined",
        "host_released",
        "host_released",
    ]


def test_the_fleet_breaker_opening_and_closing_is_told(
    sessions: sessionmaker[Session], receivers: Receivers
) -> None:
    breaker = "circuit_breaker: {window: 15m, cool_down: 10m, min_restarts: 2, failure_ratio: 0.5}"
    policy = receivers.policy(body=RESTART_POLICY.replace("circuit_breaker: null", breaker))
    for n in range(2):
        fail(sessions, policy, n)
    with transaction(sessions) as session:
        assert watch(session, policy, NOW) == 0  # a quiet fleet: nothing to tell
        # Both restarts went out and their executions failed again.
        session.execute(update(Restart).values(result="failed_again", result_at=NOW, state="done"))

    with transaction(sessions) as session:
        assert watch(session, policy, NOW + dt.timedelta(minutes=1)) == 1
    with transaction(sessions) as session:
        assert watch(session, policy, NOW + dt.timedelta(minutes=2)) == 0
    with transaction(sessions) as session:
        assert watch(session, policy, NOW + dt.timedelta(minutes=26)) == 1

    opened, closed = notifications(sessions)
    assert (opened.kind, data_of(opened)["scope"]) == ("breaker_opened", "fleet")
    assert opened.summary == "the circuit breaker opened: 2 of 2 recent restarts failed again"
    assert (closed.kind, data_of(closed)["scope"]) == ("breaker_closed", "fleet")
    deliver_due(sessions, policy, NOW + dt.timedelta(minutes=26))
    assert [r.json["type"] for r in receivers.hook.unique()] == [
        "breaker_opened",
        "breaker_closed",
    ]


def test_an_error_signature_breaker_opening_and_closing_is_told(
    sessions: sessionmaker[Session], receivers: Receivers
) -> None:
    signature_policy = (
        "version: 1\ndefaults: {backoff: {initial: 30s, jitter: 0}, deadline: 2h}\n"
        "limits: {per_job: null, per_account: null, global: null, per_host: null}\n"
        "circuit_breaker:\n  failure_ratio: 0.5\n  min_restarts: 1000\n"
        "  per_signature: {executions: 5, jobs: 3, window: 10m, cool_down: 15m}\n"
    )
    policy = receivers.policy(body=signature_policy)
    start = NOW - dt.timedelta(minutes=3)
    for n in range(6):
        at = start + dt.timedelta(seconds=30 * n)
        stderr = GIT_ERROR.format(n=n, ms=1000 + 37 * n)
        items = run_events(f"exec-git-{n}", f"job-{n % 4}", at, {f"web{n}": stderr}, ("app1",))
        with transaction(sessions) as session:
            ingest_and_decide(session, parse_deliveries(items, None, 500), at, policy, False)

    with transaction(sessions) as session:
        assert watch(session, policy, NOW) == 1
    with transaction(sessions) as session:
        assert watch(session, policy, NOW + dt.timedelta(hours=1)) == 1

    opened, closed = notifications(sessions)
    assert (opened.kind, data_of(opened)["scope"]) == ("breaker_opened", "signature")
    assert opened.summary.startswith("error signature breaker opened (6 executions of 4 jobs)")
    assert len(data_of(opened)["jobs"]) == 4
    key = data_of(opened)["signature"]
    assert (closed.kind, data_of(closed)["signature"]) == ("breaker_closed", key)
    assert closed.summary == (f"error signature breaker closed: {key}; held restarts are released")
    with sessions() as session:
        assert (
            session.scalar(select(Notification.id).where(Notification.state != "pending")) is None
        )
