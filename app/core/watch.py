"""States respawn watches for notifications: the fleet breaker, each error signature's breaker,
each host's quarantine. A change is told once: the last state told is kept (`watch_states`),
and only the process whose conditional update moves it writes the notification."""

from __future__ import annotations

import datetime as dt
import logging

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.core.notifications import Notice, notify
from app.core.signatures import open_signatures
from app.core.stats import breaker_view, quarantined_hosts
from app.models import WatchState
from app.policy import Policy

log = logging.getLogger(__name__)

OPEN, CLOSED = "open", "closed"
IN, OUT = "in", "out"


def watch(session: Session, policy: Policy, now: dt.datetime) -> int:
    """Notify what changed since the last look; how many changes were told."""
    if not policy.notify.enabled:
        return 0
    told = 0
    fleet = breaker_view(session, policy, now)
    fleet_open = fleet is not None and fleet.state.open
    if _moved(session, "breaker:fleet", OPEN if fleet_open else CLOSED, CLOSED, now):
        kind = "breaker_opened" if fleet_open else "breaker_closed"
        counts = f"{fleet.state.failed} of {fleet.state.total}" if fleet else "no"
        summary = (
            f"the circuit breaker opened: {counts} recent restarts failed again"
            if fleet_open
            else "the circuit breaker closed: automatic restarts go out again"
        )
        notify(
            session,
            policy,
            Notice(kind, f"{kind}:fleet:{now.isoformat()}", summary, details={"scope": "fleet"}),
            now,
        )
        told += 1

    current = {s.key: s for s in open_signatures(session, policy, now) if s.open}
    for key, view in current.items():
        if _moved(session, f"breaker:signature:{key}", OPEN, CLOSED, now):
            summary = (
                f"error signature breaker opened ({view.executions} executions of "
                f"{len(view.jobs)} jobs): {view.failure_class}: {view.text}"
            )
            notify(
                session,
                policy,
                Notice(
                    "breaker_opened",
                    f"breaker_opened:signature:{key}:{now.isoformat()}",
                    summary[:500],
                    details={"scope": "signature", "signature": key, "jobs": list(view.jobs)},
                ),
                now,
            )
            told += 1
    for key in _keys_in(session, "breaker:signature:", OPEN):
        signature = key.removeprefix("breaker:signature:")
        if signature not in current and _moved(session, key, CLOSED, CLOSED, now):
            notify(
                session,
                policy,
                Notice(
                    "breaker_closed",
                    f"breaker_closed:signature:{signature}:{now.isoformat()}",
                    f"error signature breaker closed: {signature}; held restarts are released",
                    details={"scope": "signature", "signature": signature},
                ),
                now,
            )
            told += 1

    held = {q.host: q for q in quarantined_hosts(session, policy.limits.per_host, now)}
    for host, q in held.items():
        if _moved(session, f"quarantine:{host}", IN, OUT, now):
            notify(
                session,
                policy,
                Notice(
                    "host_quarantined",
                    f"host_quarantined:{host}:{q.until.isoformat()}",
                    f"host {host} quarantined until {q.until:%Y-%m-%d %H:%M} UTC "
                    f"({q.failures} recent failures)",
                    hosts=(host,),
                    details={"until": q.until.isoformat(), "failures": q.failures},
                ),
                now,
            )
            told += 1
    for key in _keys_in(session, "quarantine:", IN):
        host = key.removeprefix("quarantine:")
        if host not in held and _moved(session, key, OUT, OUT, now):
            notify(
                session,
                policy,
                Notice(
                    "host_released",
                    f"host_released:{host}:{now.isoformat()}",
                    f"host {host} left quarantine: it is restarted again",
                    hosts=(host,),
                ),
                now,
            )
            told += 1
    return told


def _keys_in(session: Session, prefix: str, value: str) -> list[str]:
    return list(
        session.scalars(
            select(WatchState.key).where(
                WatchState.key.startswith(prefix, autoescape=True), WatchState.value == value
            )
        )
    )


def _moved(session: Session, key: str, value: str, initial: str, now: dt.datetime) -> bool:
    """Record `value` as the state of `key`; True when this call changed it (a state never
    seen counts as `initial`, so a first look at a quiet fleet tells nothing)."""
    row = session.get(WatchState, key)
    if row is None:
        if value == initial:
            return False
        try:
            with session.begin_nested():
                session.add(WatchState(key=key, value=value, changed_at=now))
        except IntegrityError:
            return False  # another process saw it first, and told it
        return True
    if row.value == value:
        return False
    result = session.execute(
        update(WatchState)
        .where(WatchState.key == key, WatchState.value == row.value)
        .values(value=value, changed_at=now)
        .execution_options(synchronize_session=False)
    )
    session.expire(row)
    return getattr(result, "rowcount", 0) == 1
