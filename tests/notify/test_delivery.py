"""Delivery to real receivers on loopback, on SQLite and PostgreSQL: signed webhooks checked
by an independent Standard Webhooks implementation, Slack messages, mail parsed by an SMTP
server; retries with backoff after a failing or hanging receiver, refusals, and one message
per event even when a sender dies after sending."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import pytest
import requests
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.core.notifications import (
    MAX_ATTEMPTS,
    claim_due_notifications,
    record_notification,
)
from app.core.operator import pause_automatic
from app.db import transaction
from app.models import Pause
from app.notify import Links, send, send_notification
from tests.notify.conftest import (
    PUBLIC_URL,
    SMTP_PASSWORD,
    SMTP_USER,
    Receivers,
    deliver_due,
    notifications,
)
from tests.notify.receivers import SMTPReceiver, make_certificate

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def pause(sessions: sessionmaker[Session], receivers: Receivers, **notify: str) -> None:
    policy = receivers.policy(**notify)
    with transaction(sessions) as session:
        pause_automatic(session, "job-7", "olivia", NOW, "db maintenance", policy)


def later(**delta: float) -> dt.datetime:
    return NOW + dt.timedelta(**delta)


def test_one_event_reaches_every_channel_signed_and_readable(
    sessions: sessionmaker[Session], receivers: Receivers
) -> None:
    policy = receivers.policy(default="[oncall, chat, mail]")
    with transaction(sessions) as session:
        pause_automatic(session, "job-7", "olivia", NOW, "db maintenance", policy)

    assert sorted(deliver_due(sessions, policy, NOW)) == ["sent", "sent", "sent"]

    rows = {n.channel: n for n in notifications(sessions)}
    assert {n.state for n in rows.values()} == {"sent"}
    # The webhook: verified by standardwebhooks, its id the row's stable key.
    (hook,) = receivers.hook.requests("/hook")
    assert hook.verified is True and hook.path == "/hook/oncall"
    assert hook.webhook_id == rows["oncall"].key
    assert hook.headers["content-type"] == "application/json"
    body = hook.json
    assert body["type"] == "paused"
    assert body["summary"] == "automatic restarts of job job-7 paused by olivia: db maintenance"
    assert body["data"]["job_id"] == "job-7"
    assert body["data"]["by"] == "olivia" and body["data"]["scope"] == "job"
    assert rows["oncall"].answer == "HTTP 200: ok"
    # Slack: a text for the notification and blocks for the channel.
    (slack,) = receivers.hook.requests("/services/")
    message = slack.json
    assert message["text"].startswith("Automatic restarts paused: automatic restarts of job")
    assert [b["type"] for b in message["blocks"]][:2] == ["header", "section"]
    assert message["blocks"][0]["text"]["text"] == "Automatic restarts paused"
    assert "webhook-signature" not in slack.headers
    # Mail: logged in, plain text and HTML, a stable Message-ID.
    (mail,) = receivers.smtp.mails
    assert mail.login == SMTP_USER
    assert mail.recipients == ["oncall@example.com", "db-team@example.com"]
    assert mail.sender == "respawn@example.com"
    assert mail.message["Subject"].startswith("[respawn] Automatic restarts paused:")
    assert mail.message["Message-ID"] == f"<{rows['mail'].key}@respawn>"
    assert "db maintenance" in mail.plain and "Job: job-7" in mail.plain
    assert "<h2>Automatic restarts paused</h2>" in mail.html
    assert "<th align='left'>Job</th><td>job-7</td>" in mail.html
    assert rows["mail"].answer == f"accepted by 127.0.0.1:{receivers.smtp.port}"


def test_a_failing_receiver_is_retried_with_backoff_until_it_takes_it(
    sessions: sessionmaker[Session], receivers: Receivers
) -> None:
    policy = receivers.policy()
    pause(sessions, receivers)
    receivers.hook.fail(2, status=503)

    assert deliver_due(sessions, policy, NOW) == ["pending"]
    (row,) = notifications(sessions)
    assert row.due_at == later(seconds=30) and row.attempts == 1
    assert row.last_error == "HTTP 503: receiver failed (503)"
    assert deliver_due(sessions, policy, later(seconds=29)) == []  # not due yet
    assert deliver_due(sessions, policy, later(seconds=30)) == ["pending"]
    (row,) = notifications(sessions)
    assert row.due_at == later(seconds=90)  # the wait doubled
    assert deliver_due(sessions, policy, later(seconds=90)) == ["sent"]

    (row,) = notifications(sessions)
    assert (row.state, row.attempts, row.last_error) == ("sent", 3, None)
    statuses = [r.status for r in receivers.hook.requests("/hook")]
    assert statuses == [503, 503, 200]
    assert {r.webhook_id for r in receivers.hook.requests("/hook")} == {row.key}
    assert len(receivers.hook.unique()) == 1


def test_a_receiver_that_never_answers_is_tried_again(
    sessions: sessionmaker[Session], receivers: Receivers, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(send, "TIMEOUT", (2.0, 0.3))
    policy = receivers.policy()
    pause(sessions, receivers)
    receivers.hook.hang(1)

    assert deliver_due(sessions, policy, NOW) == ["pending"]
    (row,) = notifications(sessions)
    assert row.last_error == "no answer in time"
    assert deliver_due(sessions, policy, later(seconds=30)) == ["sent"]
    assert len(receivers.hook.unique()) == 1


@sqlite_only
@pytest.mark.parametrize(
    ("status", "state"),
    [(400, "failed"), (401, "failed"), (404, "failed"), (408, "pending"), (429, "pending")],
)
def test_refusals_fail_at_once_and_busy_answers_are_retried(
    sessions: sessionmaker[Session], receivers: Receivers, status: int, state: str
) -> None:
    policy = receivers.policy()
    pause(sessions, receivers)
    receivers.hook.fail(1, status=status)

    assert deliver_due(sessions, policy, NOW) == [state]
    (row,) = notifications(sessions)
    assert row.last_error == f"HTTP {status}: receiver failed ({status})"


@sqlite_only
def test_a_notification_fails_for_good_after_its_last_try(
    sessions: sessionmaker[Session], receivers: Receivers
) -> None:
    policy = receivers.policy()
    pause(sessions, receivers)
    receivers.hook.fail(MAX_ATTEMPTS)

    moment = NOW
    for _ in range(MAX_ATTEMPTS):
        (state,) = deliver_due(sessions, policy, moment)
        moment += dt.timedelta(hours=1)

    assert state == "failed"
    (row,) = notifications(sessions)
    assert (row.state, row.attempts) == ("failed", MAX_ATTEMPTS)
    assert deliver_due(sessions, policy, moment + dt.timedelta(days=1)) == []


@sqlite_only
def test_an_unreachable_receiver_is_retried(
    sessions: sessionmaker[Session], receivers: Receivers
) -> None:
    port = receivers.hook.server.server_port
    policy = receivers.policy()
    pause(sessions, receivers)
    receivers.hook.close()

    assert deliver_due(sessions, policy, NOW) == ["pending"]
    (row,) = notifications(sessions)
    assert row.last_error == "could not reach the receiver: ConnectionError"
    assert str(port) not in (row.last_error or "")


@sqlite_only
def test_a_mail_server_that_refuses_the_login_fails_it_and_one_away_is_retried(
    sessions: sessionmaker[Session], receivers: Receivers, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_SMTP_PASSWORD", "not-the-password")
    policy = receivers.policy(default="[mail]")
    pause(sessions, receivers, default="[mail]")

    assert deliver_due(sessions, policy, NOW) == ["failed"]
    (row,) = notifications(sessions)
    assert row.last_error == "login refused: 535"
    assert receivers.smtp.logins == [("PLAIN", False), ("LOGIN", False)]  # smtplib tries both
    assert receivers.smtp.mails == []

    receivers.smtp.close()
    with transaction(sessions) as session:
        pause_automatic(session, None, "olivia", NOW, None, policy)
    assert deliver_due(sessions, policy, NOW) == ["pending"]
    assert notifications(sessions)[-1].last_error == (
        "could not reach the mail server: ConnectionRefusedError"
    )


@sqlite_only
def test_a_secret_not_set_fails_the_message_and_one_in_a_file_is_read(
    sessions: sessionmaker[Session],
    receivers: Receivers,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    policy = receivers.policy(default="[oncall, mail]")
    pause(sessions, receivers, default="[oncall, mail]")
    monkeypatch.delenv("TEST_WEBHOOK_SECRET")
    monkeypatch.delenv("TEST_SMTP_PASSWORD")
    secret_file = tmp_path / "smtp-password"
    secret_file.write_text(SMTP_PASSWORD + "\n")
    monkeypatch.setenv("TEST_SMTP_PASSWORD_FILE", str(secret_file))

    assert sorted(deliver_due(sessions, policy, NOW)) == ["failed", "sent"]
    rows = {n.channel: n for n in notifications(sessions)}
    assert rows["oncall"].last_error == (
        "TEST_WEBHOOK_SECRET is not set (the environment variable the policy names)"
    )
    assert receivers.hook.requests() == []
    assert [m.login for m in receivers.smtp.mails] == [SMTP_USER]


def test_a_sender_that_dies_after_sending_causes_no_second_message(
    sessions: sessionmaker[Session], receivers: Receivers
) -> None:
    policy = receivers.policy()
    pause(sessions, receivers)
    # A notifier claims the row and sends it; it dies before it records the answer.
    with transaction(sessions) as session:
        (claimed,) = claim_due_notifications(session, "doomed", NOW, 60.0, 10)
    with requests.Session() as http:
        sent = send_notification(policy.notify, claimed, Links(PUBLIC_URL), http)
    assert sent.outcome == "sent"

    # Its lease runs out; another notifier takes the row over and sends it again...
    assert deliver_due(sessions, policy, later(seconds=59), worker="survivor") == []
    assert deliver_due(sessions, policy, later(seconds=61), worker="survivor") == ["sent"]
    # ... and the dead one's late record changes nothing.
    with transaction(sessions) as session:
        assert record_notification(session, claimed, "doomed", sent, later(seconds=62)) == "sent"

    (row,) = notifications(sessions)
    assert (row.state, row.attempts) == ("sent", 2)
    got = receivers.hook.accepted("/hook")
    assert [r.webhook_id for r in got] == [row.key, row.key]  # the same id both times
    assert [r.repeat for r in got] == [False, True]
    assert all(r.verified for r in got)
    assert len(receivers.hook.unique()) == 1  # the receiver acted once


def test_a_notification_is_written_with_its_cause_or_not_at_all(
    sessions: sessionmaker[Session], receivers: Receivers
) -> None:
    policy = receivers.policy()

    with pytest.raises(RuntimeError), transaction(sessions) as session:
        pause_automatic(session, "job-7", "olivia", NOW, None, policy)
        raise RuntimeError("the transaction fails after the pause")

    assert notifications(sessions) == []
    assert deliver_due(sessions, policy, NOW) == []
    assert receivers.hook.requests() == []
    with transaction(sessions) as session:
        pause_automatic(session, "job-7", "olivia", NOW, None, policy)
    with sessions() as session:
        assert session.scalar(select(Pause.job_id)) == "job-7"
    assert [n.kind for n in notifications(sessions)] == ["paused"]


@sqlite_only
def test_a_channel_removed_from_the_policy_fails_its_waiting_messages(
    sessions: sessionmaker[Session], receivers: Receivers
) -> None:
    policy = receivers.policy(default="[chat]")
    pause(sessions, receivers, default="[chat]")
    channels = tuple(c for c in policy.notify.channels if c.name != "chat")
    edited = dataclasses.replace(policy.notify, channels=channels, default=("oncall",))

    with transaction(sessions) as session:
        (claimed,) = claim_due_notifications(session, "n1", NOW, 60.0, 10)
    with requests.Session() as http:
        result = send_notification(edited, claimed, Links(None), http)

    assert (result.outcome, result.answer) == ("failed", "no channel 'chat' in the policy any more")


def test_mail_goes_over_starttls_with_a_login(
    sessions: sessionmaker[Session],
    receivers: Receivers,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    certificate = make_certificate(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))  # trust the test server's own
    server = SMTPReceiver(users={SMTP_USER: SMTP_PASSWORD}, certificate=certificate)
    try:
        tls = Receivers(receivers.hook, server)
        policy = tls.policy(default="[mail]", starttls=True)
        with transaction(sessions) as session:
            pause_automatic(session, "job-7", "olivia", NOW, None, policy)

        assert deliver_due(sessions, policy, NOW) == ["sent"]
    finally:
        server.close()
    (mail,) = server.mails
    assert mail.tls is True and mail.login == SMTP_USER
    assert "automatic restarts of job job-7 paused by olivia" in mail.plain


@sqlite_only
def test_a_mail_server_without_starttls_is_refused_at_once(
    sessions: sessionmaker[Session], receivers: Receivers
) -> None:
    policy = receivers.policy(default="[mail]", starttls=True)
    with transaction(sessions) as session:
        pause_automatic(session, "job-7", "olivia", NOW, None, policy)

    assert deliver_due(sessions, policy, NOW) == ["failed"]
    (row,) = notifications(sessions)
    assert row.last_error == "STARTTLS extension not supported by server."
    assert receivers.smtp.mails == []  # nothing went in the clear
