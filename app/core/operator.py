"""Operator actions shared by the admin UI and the API: each one recorded with who did it.

Services flush and never commit; the caller's transaction commits, then wakes the dispatcher
when a restart was queued so it goes out without waiting for a poll.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core import outbox
from app.core.decisions import StoredDecision, queue_manual_restart
from app.core.errors import NotFound
from app.core.notifications import Notice, notify
from app.core.queries import get_execution
from app.core.stats import pause_of
from app.db import locked
from app.models import AuditEntry, Pause, Restart
from app.policy import Policy


def record_audit(
    session: Session,
    actor: str,
    action: str,
    target: str,
    now: dt.datetime,
    detail: dict[str, Any] | None = None,
) -> AuditEntry:
    entry = AuditEntry(at=now, actor=actor, action=action, target=target[:255], detail=detail)
    session.add(entry)
    return entry


def manual_restart(
    session: Session,
    execution_id: str,
    hosts: Sequence[str] | None,
    actor: str,
    now: dt.datetime,
    policy: Policy,
    note: str | None = None,
) -> StoredDecision:
    """Queue an operator's restart of a failed execution (hosts None: every failed host)."""
    # Locked, so two operators clicking at once cannot both pass the "already pending" check.
    execution = get_execution(session, execution_id, lock=True)
    stored = queue_manual_restart(session, execution, hosts, actor, now, policy, note)
    record_audit(
        session,
        actor,
        "restart",
        execution_id,
        now,
        {"hosts": list(stored.decision.hosts), "decision_id": stored.decision.id},
    )
    return stored


def cancel_restart(session: Session, restart_id: int, actor: str, now: dt.datetime) -> Restart:
    """Cancel a restart that has not been sent yet."""
    restart = session.scalars(
        locked(session, select(Restart).where(Restart.id == restart_id))
    ).one_or_none()
    if restart is None:
        raise NotFound(f"no restart {restart_id}")
    outbox.cancel(restart, actor, now)
    record_audit(session, actor, "cancel", f"restart {restart_id}", now)
    return restart


def pause_automatic(
    session: Session,
    job_id: str | None,
    actor: str,
    now: dt.datetime,
    reason: str | None = None,
    policy: Policy | None = None,
) -> Pause:
    """Pause automatic restarts for one job, or for every job when job_id is None; with the
    policy, its notification channels are told."""
    key = job_id or ""
    pause = pause_of(session, job_id)
    if pause is None:
        pause = Pause(job_id=key, paused_by=actor, paused_at=now, reason=reason)
        session.add(pause)
        if policy is not None:
            scope = f"job {key}" if key else "every job"
            summary = f"automatic restarts of {scope} paused by {actor}"
            summary += f": {reason}" if reason else ""
            _tell_pause(session, policy, "paused", key, summary, actor, now)
    record_audit(
        session,
        actor,
        "pause",
        f"job {key}" if key else "global",
        now,
        {"reason": reason} if reason else None,
    )
    session.flush()
    return pause


def resume_automatic(
    session: Session,
    job_id: str | None,
    actor: str,
    now: dt.datetime,
    policy: Policy | None = None,
) -> bool:
    """Resume automatic restarts; False when they were not paused."""
    key = job_id or ""
    pause = pause_of(session, job_id)
    if pause is None:
        return False
    session.delete(pause)
    if policy is not None:
        scope = f"job {key}" if key else "every job"
        summary = f"automatic restarts of {scope} resumed by {actor}"
        _tell_pause(session, policy, "resumed", key, summary, actor, now)
    record_audit(session, actor, "resume", f"job {key}" if key else "global", now)
    session.flush()
    return True


def _tell_pause(
    session: Session,
    policy: Policy,
    kind: str,
    job_id: str,
    summary: str,
    actor: str,
    now: dt.datetime,
) -> None:
    notify(
        session,
        policy,
        Notice(
            kind=kind,
            key=f"{kind}:{job_id or 'global'}:{now.isoformat()}",
            summary=summary,
            job_id=job_id,
            details={"scope": "job" if job_id else "global", "by": actor},
        ),
        now,
    )
