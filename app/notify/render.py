"""How a notification reads: one line, a Slack message, an email, a webhook body."""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any

from app.core.notifications import ClaimedNotification

TITLES = {
    "restart_sent": "Restart sent",
    "restart_failed": "Restart failed",
    "gave_up": "Gave up",
    "host_quarantined": "Host quarantined",
    "host_released": "Host released from quarantine",
    "breaker_opened": "Circuit breaker opened",
    "breaker_closed": "Circuit breaker closed",
    "policy_refused": "Policy edit refused",
    "paused": "Automatic restarts paused",
    "resumed": "Automatic restarts resumed",
    "callbacks_spooled": "Callbacks spooled",
    "test": "Test message",
}
FIELDS = (
    ("execution_id", "Execution"),
    ("job_id", "Job"),
    ("job_description", "Description"),
    ("account", "Account"),
    ("hosts", "Hosts"),
    ("rule", "Rule"),
    ("reason", "Reason"),
)
VERBS = {
    "restart_sent": ("was restarted", "were restarted"),
    "restart_failed": ("failed to restart", "failed to restart"),
    "gave_up": ("gave up", "gave up"),
}
"""What a digest's executions did: (one, several)."""


@dataclass(frozen=True)
class Message:
    """One notification in every form a channel needs."""

    kind: str
    title: str
    text: str
    """One line: the summary (or a digest's count)."""
    fields: list[tuple[str, str]]
    link: str | None
    body: dict[str, Any]
    """The webhook JSON."""


def message(claimed: ClaimedNotification, link_for: Any, digest_window: str) -> Message:
    """`link_for(execution_id)` gives the admin page of an execution (or None)."""
    title = TITLES.get(claimed.kind, claimed.kind)
    if claimed.digest_items or claimed.payload.get("digest"):
        return _digest(claimed, title, link_for, digest_window)
    data = dict(claimed.payload.get("data") or {})
    link = link_for(data["execution_id"]) if data.get("execution_id") else None
    if link:
        data["link"] = link
    fields = [(label, _show(data.get(key))) for key, label in FIELDS if data.get(key)]
    body = {**claimed.payload, "data": data}
    return Message(claimed.kind, title, claimed.summary, fields, link, body)


def _digest(claimed: ClaimedNotification, title: str, link_for: Any, window: str) -> Message:
    items = [dict(item.get("data") or {}) for item in claimed.digest_items]
    job = next((i.get("job_id") for i in items if i.get("job_id")), None)
    count = claimed.digest_count
    one, several = VERBS.get(claimed.kind, ("", ""))
    verb = one if count == 1 else several
    what = f"{count} more execution{'s' if count != 1 else ''}"
    where = f" of job {job}" if job else ""
    text = f"{what}{where} {verb} in the last {window}"
    if claimed.kind not in VERBS:
        plural = "s" if count != 1 else ""
        text = f"{count} more '{title.lower()}' notification{plural}{where} in the last {window}"
    for item in items:
        if item.get("execution_id"):
            item["link"] = link_for(item["execution_id"])
    listed = ", ".join(str(i.get("execution_id")) for i in items if i.get("execution_id"))
    fields = [("Executions", listed)] if listed else []
    body = {
        "type": claimed.kind,
        "digest": True,
        "count": count,
        "summary": text,
        "data": {"job_id": job, "events": items},
    }
    return Message(claimed.kind, f"{title} (digest of {count})", text, fields, None, body)


def _show(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value) or "none"
    return str(value)


def slack_payload(msg: Message) -> dict[str, Any]:
    """An incoming-webhook message: `text` for notifications, `blocks` for the channel."""
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": msg.title[:150]}},
        {"type": "section", "text": {"type": "mrkdwn", "text": _slack_escape(msg.text)[:2900]}},
    ]
    if msg.fields:
        blocks.append(
            {
                "type": "section",
                "fields": [
                    {"type": "mrkdwn", "text": f"*{label}*\n{_slack_escape(value)[:1900]}"}
                    for label, value in msg.fields[:10]
                ],
            }
        )
    if msg.link:
        blocks.append(
            {
                "type": "context",
                "elements": [{"type": "mrkdwn", "text": f"<{msg.link}|Open in respawn>"}],
            }
        )
    return {"text": f"{msg.title}: {msg.text}"[:3000], "blocks": blocks}


def _slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def email_parts(msg: Message) -> tuple[str, str, str]:
    """Subject, plain text and a simple HTML part."""
    subject = f"[respawn] {msg.title}: {msg.text}"[:200]
    lines = [msg.text, ""]
    lines += [f"{label}: {value}" for label, value in msg.fields]
    if msg.link:
        lines += ["", f"Open in respawn: {msg.link}"]
    plain = "\n".join(lines) + "\n"
    rows = "".join(
        f"<tr><th align='left'>{html.escape(label)}</th><td>{html.escape(value)}</td></tr>"
        for label, value in msg.fields
    )
    link = (
        f"<p><a href='{html.escape(msg.link, quote=True)}'>Open in respawn</a></p>"
        if msg.link
        else ""
    )
    body = (
        f"<html><body><h2>{html.escape(msg.title)}</h2><p>{html.escape(msg.text)}</p>"
        f"<table>{rows}</table>{link}</body></html>"
    )
    return subject, plain, body
