"""The notification tests' shared parts: real receivers on loopback (webhook, Slack, SMTP),
planted secrets in the environment, a policy naming them, and a stand-in for one pass of the
notifier at a chosen moment."""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.core.ingest import ingest_and_decide, parse_deliveries
from app.core.notifications import claim_due_notifications, record_notification
from app.db import make_engine, make_sessionmaker, transaction
from app.models import Job, Notification
from app.notify import Links, send_notification
from app.policy import Policy, parse_policy
from tests.notify.receivers import SMTPReceiver, WebhookReceiver

PUBLIC_URL = "https://respawn.example.com/ops"
WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"planted-webhook-secret-7f3a9c2e41").decode()
SLACK_PATH = "/services/T0PLANTED/B0PLANTED/planted-slack-token-8c1f5e"
SMTP_USER = "respawn-mailer"
SMTP_PASSWORD = "planted-smtp-password-5d2e90"
PLANTED = (WEBHOOK_SECRET, "planted-slack-token-8c1f5e", SMTP_PASSWORD)
"""What must never be written anywhere respawn writes (the Slack token is its URL's secret)."""

BASE_POLICY = (
    "version: 1\n"
    "defaults: {backoff: {initial: 0s}}\n"
    "limits: {per_job: null, per_account: null, global: null, per_host: null}\n"
    "circuit_breaker: null\n"
)


@dataclass(frozen=True)
class Receivers:
    hook: WebhookReceiver
    smtp: SMTPReceiver

    def notify_yaml(
        self,
        *,
        routes: str = "",
        default: str = "[oncall]",
        digest: str = "0s",
        starttls: bool = False,
    ) -> str:
        """A `notify:` section with three channels on these receivers: `oncall` (signed
        webhook), `chat` (Slack) and `mail` (SMTP with login; STARTTLS if asked)."""
        text = (
            "notify:\n"
            f"  digest: {digest}\n"
            "  channels:\n"
            f"    oncall: {{type: webhook, url: '{self.hook.url}/hook/oncall',"
            " secret: TEST_WEBHOOK_SECRET}\n"
            "    chat: {type: slack, url: TEST_SLACK_URL}\n"
            "    mail:\n"
            "      type: email\n"
            "      to: [oncall@example.com, db-team@example.com]\n"
            "      from: respawn@example.com\n"
            f"      smtp: {{host: 127.0.0.1, port: {self.smtp.port},"
            f" starttls: {str(starttls).lower()}, username: {SMTP_USER},"
            " password: TEST_SMTP_PASSWORD, timeout: 5s}\n"
        )
        if routes:
            text += "  routes:\n" + routes
        if default:
            text += f"  default: {default}\n"
        return text

    def policy(self, body: str = BASE_POLICY, **notify: Any) -> Policy:
        return parse_policy(body + self.notify_yaml(**notify), "policy.yaml")


@pytest.fixture
def hook() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver(WEBHOOK_SECRET)
    yield receiver
    receiver.close()


@pytest.fixture
def smtp() -> Iterator[SMTPReceiver]:
    receiver = SMTPReceiver(users={SMTP_USER: SMTP_PASSWORD})
    yield receiver
    receiver.close()


@pytest.fixture
def receivers(
    hook: WebhookReceiver, smtp: SMTPReceiver, monkeypatch: pytest.MonkeyPatch
) -> Receivers:
    """The receivers, with the secrets the policy names planted in the environment."""
    monkeypatch.setenv("TEST_WEBHOOK_SECRET", WEBHOOK_SECRET)
    monkeypatch.setenv("TEST_SLACK_URL", hook.url + SLACK_PATH)
    monkeypatch.setenv("TEST_SMTP_PASSWORD", SMTP_PASSWORD)
    return Receivers(hook, smtp)


@pytest.fixture
def sessions(database_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(database_url)
    yield make_sessionmaker(engine)
    engine.dispose()


# --- the record ------------------------------------------------------------------------------


def feed(
    sessions: sessionmaker[Session], items: list[dict[str, Any]], now: dt.datetime, policy: Policy
) -> None:
    """Callbacks stored, applied and decided at `now`, as the intake does."""
    with transaction(sessions) as session:
        ingest_and_decide(session, parse_deliveries(items, None, 500), now, policy, False)


def add_job(sessions: sessionmaker[Session], job_id: str, description: str, account: str) -> None:
    with transaction(sessions) as session:
        session.add(Job(job_id=job_id, description=description, account_alias=account))


def notifications(sessions: sessionmaker[Session], **where: Any) -> list[Notification]:
    with sessions() as session:
        query = select(Notification).filter_by(**where).order_by(Notification.id)
        rows = list(session.scalars(query))
        session.expunge_all()
        return rows


def deliver_due(
    sessions: sessionmaker[Session],
    policy: Policy,
    now: dt.datetime,
    worker: str = "test-notifier",
    public_url: str | None = PUBLIC_URL,
) -> list[str]:
    """One notifier pass at `now`: claim what is due, send it, record it; the new states."""
    with transaction(sessions) as session:
        claims = claim_due_notifications(session, worker, now, 60.0, 100)
    states = []
    with requests.Session() as http:
        for claimed in claims:
            result = send_notification(policy.notify, claimed, Links(public_url), http)
            with transaction(sessions) as session:
                states.append(record_notification(session, claimed, worker, result, now))
    return states


# The Runner simulator over real HTTP, shared with the dispatcher tests.
from tests.dispatcher.conftest import control, make_sim, sim  # noqa: E402, F401
