"""Delivering a notification on its channel: a signed webhook, a Slack incoming webhook, an
email over SMTP. Each answer becomes a `SendResult`: sent, retry (the receiver failed or was
away), or failed (it can never work: no such channel, a secret not set, a refusal)."""

from __future__ import annotations

import json
import logging
import os
import smtplib
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from urllib.parse import quote

import requests

from app.core.notifications import ClaimedNotification, SendResult
from app.notify.render import Message, email_parts, message, slack_payload
from app.policy import format_duration
from app.policy.notify_model import Channel, NotifyConfig
from app.redact import KNOWN_SECRETS, redact_text
from app.webhooks import sign

log = logging.getLogger(__name__)

TIMEOUT = (3.05, 10.0)
MAX_ANSWER = 300
"""Characters of a receiver's answer kept (redacted)."""
USER_AGENT = "respawn-notifications"


class SecretMissing(Exception):
    """A secret the policy names is not in the environment (nor in a NAME_FILE)."""


def resolve_secret(name: str) -> str:
    """The value of environment variable `name`, or of the file `name`_FILE names."""
    value = os.environ.get(name)
    if value is None and os.environ.get(f"{name}_FILE"):
        try:
            value = Path(os.environ[f"{name}_FILE"]).read_text().strip()
        except OSError as exc:
            raise SecretMissing(f"{name}_FILE cannot be read: {exc.strerror}") from None
    if not value:
        raise SecretMissing(f"{name} is not set (the environment variable the policy names)")
    KNOWN_SECRETS.add(value)  # an echo of it is scrubbed wherever it might be written
    return value


@dataclass(frozen=True)
class Links:
    """Where the admin UI is, for links in notifications (`RESPAWN_PUBLIC_URL`)."""

    public_url: str | None

    def execution(self, execution_id: str) -> str | None:
        if not self.public_url:
            return None
        return f"{self.public_url.rstrip('/')}/admin/executions/{quote(execution_id, safe='')}"


def send_notification(
    config: NotifyConfig,
    claimed: ClaimedNotification,
    links: Links,
    http: requests.Session,
    smtp: Callable[..., smtplib.SMTP] = smtplib.SMTP,
) -> SendResult:
    """Render and deliver one claimed notification on its channel."""
    channel = config.channel(claimed.channel)
    if channel is None:
        return SendResult("failed", f"no channel '{claimed.channel}' in the policy any more")
    msg = message(claimed, links.execution, format_duration(config.digest))
    return deliver(channel, msg, claimed.key, http, smtp)


def send_test(
    config: NotifyConfig,
    name: str,
    links: Links,
    http: requests.Session,
    smtp: Callable[..., smtplib.SMTP] = smtplib.SMTP,
) -> SendResult:
    """A test message on one channel, now (`respawn notify test`)."""
    channel = config.channel(name)
    if channel is None:
        known = ", ".join(c.name for c in config.channels) or "none"
        return SendResult("failed", f"no channel '{name}' in the policy (channels: {known})")
    now = time.time()
    claimed = ClaimedNotification(
        id=0,
        key=f"msg_test_{int(now * 1000)}",
        kind="test",
        channel=name,
        summary=f"a test message from respawn to channel {name}",
        payload={
            "type": "test",
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(now)),
            "summary": f"a test message from respawn to channel {name}",
            "data": {},
        },
        attempt=1,
    )
    msg = message(claimed, links.execution, format_duration(config.digest))
    return deliver(channel, msg, claimed.key, http, smtp)


def deliver(
    channel: Channel,
    msg: Message,
    key: str,
    http: requests.Session,
    smtp: Callable[..., smtplib.SMTP] = smtplib.SMTP,
) -> SendResult:
    try:
        if channel.type == "webhook":
            return _webhook(channel, msg, key, http)
        if channel.type == "slack":
            return _slack(channel, msg, http)
        return _email(channel, msg, key, smtp)
    except SecretMissing as exc:
        return SendResult("failed", str(exc))


def _webhook(channel: Channel, msg: Message, key: str, http: requests.Session) -> SendResult:
    body = json.dumps(msg.body, separators=(",", ":"), default=str).encode()
    timestamp = int(time.time())
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "webhook-id": key,
        "webhook-timestamp": str(timestamp),
    }
    if channel.secret_env:
        secret = resolve_secret(channel.secret_env)
        headers["webhook-signature"] = sign(secret, key, timestamp, body)
    assert channel.url is not None  # a webhook channel always has one (the loader checks)
    return _post(http, channel.url, body, headers)


def _slack(channel: Channel, msg: Message, http: requests.Session) -> SendResult:
    assert channel.secret_env is not None
    url = resolve_secret(channel.secret_env)
    body = json.dumps(slack_payload(msg)).encode()
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
    return _post(http, url, body, headers)


def _post(http: requests.Session, url: str, body: bytes, headers: dict[str, str]) -> SendResult:
    try:
        response = http.post(url, data=body, headers=headers, timeout=TIMEOUT)
    except requests.Timeout:
        return SendResult("retry", "no answer in time")
    except requests.RequestException as exc:
        return SendResult("retry", _clean(f"could not reach the receiver: {type(exc).__name__}"))
    answer = _clean(f"HTTP {response.status_code}: {response.text[:MAX_ANSWER]}")
    if 200 <= response.status_code < 300:
        return SendResult("sent", answer)
    if response.status_code in (408, 429) or response.status_code >= 500:
        return SendResult("retry", answer)
    return SendResult("failed", answer)


def _email(
    channel: Channel, msg: Message, key: str, smtp: Callable[..., smtplib.SMTP]
) -> SendResult:
    server = channel.smtp
    assert server is not None and channel.sender is not None
    subject, plain, rich = email_parts(msg)
    mail = EmailMessage()
    mail["Subject"] = subject
    mail["From"] = channel.sender
    mail["To"] = ", ".join(channel.to)
    mail["Message-ID"] = f"<{key}@respawn>"  # the same for every try: receivers can dedupe
    mail.set_content(plain)
    mail.add_alternative(rich, subtype="html")
    password = resolve_secret(server.password_env) if server.password_env else None
    try:
        with smtp(server.host, server.port, timeout=server.timeout) as client:
            if server.starttls:
                client.starttls(context=ssl.create_default_context())
            if server.username and password is not None:
                client.login(server.username, password)
            refused = client.send_message(mail)
    except smtplib.SMTPRecipientsRefused as exc:
        return SendResult("failed", _clean(f"every recipient refused: {exc.recipients}"))
    except smtplib.SMTPAuthenticationError as exc:
        return SendResult("failed", _clean(f"login refused: {exc.smtp_code}"))
    except smtplib.SMTPNotSupportedError as exc:
        # The policy asks for STARTTLS or a login the server does not offer: no retry helps.
        return SendResult("failed", _clean(str(exc)))
    except smtplib.SMTPResponseException as exc:
        text = _clean(f"SMTP {exc.smtp_code}: {exc.smtp_error!r}")
        return SendResult("retry" if 400 <= exc.smtp_code < 500 else "failed", text)
    except (OSError, smtplib.SMTPException) as exc:
        return SendResult("retry", _clean(f"could not reach the mail server: {type(exc).__name__}"))
    if refused:
        return SendResult("sent", _clean(f"accepted; refused for {sorted(refused)}"))
    return SendResult("sent", f"accepted by {server.host}:{server.port}")


def _clean(text: str) -> str:
    return redact_text(text)[: MAX_ANSWER + 40]
