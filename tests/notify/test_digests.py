"""Digests, on SQLite and PostgreSQL: the first event of a kind for a job goes out at once,
the next ones within the window fold into one digest sent when the window ends; other jobs,
other kinds and later events are not folded; a window of 0s folds nothing."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy.orm import Session, sessionmaker

from app.core.notifications import ClaimedNotification
from app.notify.render import email_parts, message, slack_payload
from app.policy import Policy
from tests.feed import failing_run_events, ms
from tests.notify.conftest import PUBLIC_URL, Receivers, add_job, deliver_due, feed, notifications

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
SKIP_DB = (
    "version: 1\n"
    "limits: {per_job: null, per_account: null, global: null, per_host: null}\n"
    "rules:\n  - {name: hands-off, when: {job: 'db-*'}, action: skip, notify: true}\n"
)


def at(minutes: float) -> dt.datetime:
    return NOW + dt.timedelta(minutes=minutes)


def give_up(
    sessions: sessionmaker[Session], policy: Policy, n: int, job: str, minutes: float
) -> str:
    execution = f"{n:08d}-0000-4000-8000-0000000d1e57"
    items = failing_run_events(
        ms(at(minutes)) - 5_000, ("web2",), prefix=f"d{n}-", execution_id=execution, job_id=job
    )
    feed(sessions, items, at(minutes), policy)
    return execution


def test_a_burst_for_one_job_folds_into_one_digest_sent_when_the_window_ends(
    sessions: sessionmaker[Session], receivers: Receivers
) -> None:
    policy = receivers.policy(body=SKIP_DB, digest="5m", default="[oncall, mail]")
    add_job(sessions, "db-migrate", "migrate the orders database", "XXXX")

    first = give_up(sessions, policy, 1, "db-migrate", 0)
    assert sorted(deliver_due(sessions, policy, at(0))) == ["sent", "sent"]
    second = give_up(sessions, policy, 2, "db-migrate", 1)
    third = give_up(sessions, policy, 3, "db-migrate", 2)
    other_job = give_up(sessions, policy, 4, "db-backup", 2)
    # Only the other job's first event is due before the window ends.
    assert sorted(deliver_due(sessions, policy, at(4))) == ["sent", "sent"]

    rows = notifications(sessions, channel="oncall")
    by_state = {r.payload["data"]["execution_id"]: r.state for r in rows if not r.digest}
    assert by_state == {first: "sent", second: "folded", third: "folded", other_job: "sent"}
    (digest,) = [r for r in rows if r.digest]
    assert (digest.state, digest.folded, digest.due_at) == ("pending", 2, at(5))
    assert {r.digest_id for r in rows if r.state == "folded"} == {digest.id}

    assert sorted(deliver_due(sessions, policy, at(5))) == ["sent", "sent"]
    hooks = [r.json for r in receivers.hook.unique()]
    assert [h["data"].get("execution_id") for h in hooks[:2]] == [first, other_job]
    body = hooks[2]
    assert body["digest"] is True and body["count"] == 2 and body["type"] == "gave_up"
    assert body["summary"] == "2 more executions of job db-migrate gave up in the last 5m"
    assert [e["execution_id"] for e in body["data"]["events"]] == [second, third]
    assert body["data"]["events"][0]["link"] == f"{PUBLIC_URL}/admin/executions/{second}"
    assert body["data"]["events"][0]["job_description"] == "migrate the orders database"
    mail = receivers.smtp.mails[-1]
    assert mail.message["Subject"] == (
        "[respawn] Gave up (digest of 2): 2 more executions of job db-migrate gave up in the"
        " last 5m"
    )
    assert f"Executions: {second}, {third}" in mail.plain

    # After the window, the next event goes out at once again.
    fourth = give_up(sessions, policy, 5, "db-migrate", 6)
    assert sorted(deliver_due(sessions, policy, at(6))) == ["sent", "sent"]
    assert receivers.hook.unique()[-1].json["data"]["execution_id"] == fourth


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_window_of_zero_folds_nothing(
    sessions: sessionmaker[Session], receivers: Receivers
) -> None:
    policy = receivers.policy(body=SKIP_DB, digest="0s")

    for n in range(3):
        give_up(sessions, policy, n, "db-migrate", n / 10)

    assert [r.state for r in notifications(sessions)] == ["pending"] * 3
    assert deliver_due(sessions, policy, at(1)) == ["sent"] * 3


def claimed(kind: str, count: int, items: tuple[dict[str, object], ...]) -> ClaimedNotification:
    return ClaimedNotification(
        id=1, key="msg_x", kind=kind, channel="c", summary="first", payload={"digest": True},
        attempt=1, digest_items=items, digest_count=count,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("kind", "count", "job", "text"),
    [
        ("restart_sent", 1, "j-1", "1 more execution of job j-1 was restarted in the last 5m"),
        ("restart_failed", 3, None, "3 more executions failed to restart in the last 5m"),
        ("host_quarantined", 4, None, "4 more 'host quarantined' notifications in the last 5m"),
        ("paused", 1, "j-2", "1 more 'automatic restarts paused' notification of job j-2 in the"
         " last 5m"),
    ],
)  # fmt: skip
def test_a_digest_reads_as_a_count_of_what_happened(
    kind: str, count: int, job: str | None, text: str
) -> None:
    items = ({"data": {"job_id": job, "hosts": ["web1"]}},) if job else ({"data": {}},)

    msg = message(claimed(kind, count, items), lambda e: f"https://r.example.com/{e}", "5m")

    assert msg.text == text and msg.link is None and msg.fields == []
    assert msg.title.endswith(f"(digest of {count})")
    assert slack_payload(msg)["text"].endswith(text)
    subject, plain, html = email_parts(msg)
    assert text in subject and plain == text + "\n\n" and "<table></table>" in html
