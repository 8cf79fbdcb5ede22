"""Notifications in the record: written in the transaction of what caused them, one row per
channel, folded into digests when they come in bursts, claimed under a lease and sent by the
background (docs/policy.md, "Notifications").

A notification's `key` is its `webhook-id`: the same for every try of one event on one
channel, so a receiver that saw it already (a dispatcher died after sending, before recording)
knows it is a repeat. Rows are written here; `app.notify` renders and sends them.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app import metrics
from app.db import locked
from app.models import (
    Execution,
    Notification,
    NotificationState,
    RouteMute,
)
from app.policy import Policy
from app.policy.notify_model import EventFacts, destinations

log = logging.getLogger(__name__)

MAX_ATTEMPTS: Final = 8
RETRY_BASE_SECONDS: Final = 30.0
RETRY_MAX_SECONDS: Final = 3600.0
MAX_DIGEST_ITEMS: Final = 50
"""Events listed in one digest (the count says how many there were)."""


@dataclass(frozen=True)
class Notice:
    """One thing that happened, as notifications tell it."""

    kind: str
    key: str
    """What makes it this event and no other (a decision id, a breaker's opening time...)."""
    summary: str
    execution: Execution | None = None
    job_id: str = ""
    job_description: str | None = None
    account: str = ""
    hosts: Sequence[str] = ()
    rule: str | None = None
    reason: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)

    def data(self) -> dict[str, Any]:
        execution = self.execution
        return {
            "execution_id": execution.execution_id if execution is not None else None,
            "job_id": self.job_id or (execution.job_id if execution is not None else None),
            "job_description": self.job_description,
            "account": self.account or (execution.account_alias if execution else None),
            "hosts": list(self.hosts),
            "rule": self.rule,
            "reason": self.reason,
            **self.details,
        }


def message_key(event_key: str, channel: str) -> str:
    """The `webhook-id` of one event on one channel."""
    return "msg_" + hashlib.sha256(f"{event_key}\0{channel}".encode()).hexdigest()[:40]


def muted_routes(session: Session, now: dt.datetime) -> frozenset[str]:
    return frozenset(session.scalars(select(RouteMute.route).where(RouteMute.until > now)))


def notify(session: Session, policy: Policy, notice: Notice, now: dt.datetime) -> int:
    """Queue the notice on every channel its routes name; how many rows were written.

    Flushes, never commits. A notice queued before (the same key) is not queued again.
    """
    config = policy.notify
    if not config.enabled:
        return 0
    execution = notice.execution
    job_id = notice.job_id or (execution.job_id if execution is not None else "")
    account = notice.account or (execution.account_alias if execution is not None else "")
    facts = EventFacts(notice.kind, (job_id, notice.job_description or ""), account, notice.rule)
    muted = muted_routes(session, now)
    chosen = destinations(config, facts, muted)
    silenced = [d for d in destinations(config, facts) if d not in chosen] if muted else []
    written = 0
    payload = {
        "type": notice.kind,
        "timestamp": now.isoformat(),
        "summary": notice.summary,
        "data": notice.data(),
    }
    for destination, state in [(d, NotificationState.PENDING) for d in chosen] + [
        (d, NotificationState.MUTED) for d in silenced
    ]:
        row = Notification(
            key=message_key(notice.key, destination.channel),
            kind=notice.kind,
            channel=destination.channel,
            route=destination.route,
            execution_pk=execution.id if execution is not None else None,
            job_id=job_id[:128],
            account=account[:128],
            summary=notice.summary,
            payload=payload,
            state=state,
            due_at=now,
            created_at=now,
        )
        if session.scalar(select(Notification.id).where(Notification.key == row.key)):
            continue  # this event was queued for this channel already
        try:
            with session.begin_nested():
                if state == NotificationState.PENDING and config.digest:
                    _fold(session, row, config.digest, now)
                session.add(row)
        except IntegrityError:
            continue  # queued by another process at the same moment
        written += 1
    return written


def _fold(session: Session, row: Notification, window: dt.timedelta, now: dt.datetime) -> None:
    """The second and later events of one kind for one job on one channel within the window
    join a digest, sent at the end of the window that the first one opened."""
    first = session.scalar(
        select(Notification)
        .where(
            Notification.kind == row.kind,
            Notification.job_id == row.job_id,
            Notification.channel == row.channel,
            Notification.digest.is_(False),
            Notification.state.in_(
                (NotificationState.PENDING, NotificationState.SENDING, NotificationState.SENT)
            ),
            Notification.created_at > now - window,
        )
        .order_by(Notification.created_at, Notification.id)
        .limit(1)
    )
    if first is None:
        return
    closes = first.created_at + window
    digest = session.scalar(
        select(Notification)
        .where(
            Notification.digest.is_(True),
            Notification.kind == row.kind,
            Notification.job_id == row.job_id,
            Notification.channel == row.channel,
            Notification.state == NotificationState.PENDING,
            Notification.due_at == closes,
        )
        .limit(1)
    )
    if digest is None:
        digest = Notification(
            key=message_key(f"digest:{row.kind}:{row.job_id}:{closes.isoformat()}", row.channel),
            kind=row.kind,
            channel=row.channel,
            route=row.route,
            execution_pk=None,
            job_id=row.job_id,
            account=row.account,
            summary=row.summary,
            payload={"type": row.kind, "digest": True},
            state=NotificationState.PENDING,
            digest=True,
            folded=0,
            due_at=closes,
            created_at=now,
        )
        session.add(digest)
        session.flush()
    digest.folded += 1
    row.state = NotificationState.FOLDED
    row.digest_id = digest.id


# --- claims and results ---------------------------------------------------------------------


@dataclass(frozen=True)
class ClaimedNotification:
    """What the sender needs, read inside the claim's transaction."""

    id: int
    key: str
    kind: str
    channel: str
    summary: str
    payload: dict[str, Any]
    attempt: int
    digest_items: tuple[dict[str, Any], ...] = ()
    """For a digest: the payloads it gathers (at most `MAX_DIGEST_ITEMS`), oldest first."""
    digest_count: int = 0


def _due(now: dt.datetime) -> Any:
    return or_(
        and_(Notification.state == NotificationState.PENDING, Notification.due_at <= now),
        and_(Notification.state == NotificationState.SENDING, Notification.lease_expires_at < now),
    )


def claim_due_notifications(
    session: Session, worker: str, now: dt.datetime, lease_seconds: float, limit: int
) -> list[ClaimedNotification]:
    """Claim due notifications (and ones whose sender's lease ran out) for `worker`."""
    query = (
        select(Notification.id).where(_due(now)).order_by(Notification.due_at, Notification.id)
    ).limit(limit)
    claimed: list[ClaimedNotification] = []
    for notification_id in list(
        session.scalars(locked(session, query, of=Notification, skip_locked=True))
    ):
        result = session.execute(
            update(Notification)
            .where(Notification.id == notification_id, _due(now))
            .values(
                state=NotificationState.SENDING,
                lease_owner=worker,
                lease_expires_at=now + dt.timedelta(seconds=lease_seconds),
                attempts=Notification.attempts + 1,
            )
            .execution_options(synchronize_session=False)
        )
        if getattr(result, "rowcount", 0) != 1:
            continue
        row = session.get_one(Notification, notification_id, populate_existing=True)
        items: tuple[dict[str, Any], ...] = ()
        if row.digest:
            items = tuple(
                session.scalars(
                    select(Notification.payload)
                    .where(Notification.digest_id == row.id)
                    .order_by(Notification.id)
                    .limit(MAX_DIGEST_ITEMS)
                )
            )
        claimed.append(
            ClaimedNotification(
                row.id,
                row.key,
                row.kind,
                row.channel,
                row.summary,
                dict(row.payload),
                row.attempts,
                items,
                row.folded,
            )
        )
    return claimed


SendOutcome = Literal["sent", "retry", "failed"]


@dataclass(frozen=True)
class SendResult:
    outcome: SendOutcome
    answer: str
    """What the receiver said (status and a bounded, redacted snippet), or the error."""


def record_notification(
    session: Session,
    claimed: ClaimedNotification,
    worker: str,
    result: SendResult,
    now: dt.datetime,
) -> str:
    """Record a send; the row's new state. Only the lease holder records."""
    row = session.get_one(Notification, claimed.id, populate_existing=True)
    if row.state != NotificationState.SENDING or row.lease_owner != worker:
        return str(row.state)  # someone took it over after our lease ran out
    row.lease_owner = None
    row.lease_expires_at = None
    outcome = result.outcome
    if outcome == "retry" and row.attempts >= MAX_ATTEMPTS:
        outcome = "failed"
    if outcome == "sent":
        row.state = NotificationState.SENT
        row.sent_at = now
        row.answer = result.answer
        row.last_error = None
    elif outcome == "retry":
        row.state = NotificationState.PENDING
        delay = min(RETRY_BASE_SECONDS * 2 ** (row.attempts - 1), RETRY_MAX_SECONDS)
        row.due_at = now + dt.timedelta(seconds=delay)
        row.last_error = result.answer
    else:
        row.state = NotificationState.FAILED
        row.last_error = result.answer
    metrics.NOTIFICATIONS.labels(channel=row.channel, outcome=outcome).inc()
    return str(row.state)


# --- what the pages show ----------------------------------------------------------------------


def recent_notifications(
    session: Session, limit: int = 200, execution: Execution | None = None
) -> list[Notification]:
    query = select(Notification).order_by(Notification.id.desc()).limit(limit)
    if execution is not None:
        query = query.where(Notification.execution_pk == execution.id)
    return list(session.scalars(query))


def notification_counts(session: Session) -> dict[str, int]:
    rows = session.execute(
        select(Notification.state, func.count()).group_by(Notification.state)
    ).all()
    return {str(state): count for state, count in rows}


def mute_route(
    session: Session, route: str, until: dt.datetime, actor: str, now: dt.datetime
) -> RouteMute:
    mute = session.get(RouteMute, route)
    if mute is None:
        mute = RouteMute(route=route, until=until, muted_by=actor, muted_at=now)
        session.add(mute)
    else:
        mute.until, mute.muted_by, mute.muted_at = until, actor, now
    return mute


def unmute_route(session: Session, route: str) -> bool:
    mute = session.get(RouteMute, route)
    if mute is None:
        return False
    session.delete(mute)
    return True


def active_mutes(session: Session, now: dt.datetime) -> list[RouteMute]:
    return list(
        session.scalars(select(RouteMute).where(RouteMute.until > now).order_by(RouteMute.route))
    )
