"""Read-side queries shared by the JSON API, the admin UI and the CLI."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import exists, func, or_, select, tuple_
from sqlalchemy.orm import Session

from app.core.errors import Malformed, NotFound, quoted
from app.core.left_failed import LeftFailed, left_failed
from app.db import SelectT, locked
from app.models import (
    ACTIVE_RESTART_STATES,
    Decision,
    Event,
    Execution,
    ExecutionRun,
    HostFailure,
    Job,
    Restart,
    RestartAttempt,
)


@dataclass(frozen=True)
class ExecutionFilters:
    status: tuple[str, ...] = ()
    account: str | None = None
    job: str | None = None
    host: str | None = None
    pending_restart: bool = False
    search: str | None = None


@dataclass
class Page:
    items: list[Any]
    next_cursor: str | None


@dataclass
class ExecutionDetail:
    execution: Execution
    job: Job | None
    runs: list[ExecutionRun]
    failures: list[HostFailure]
    decisions: list[Decision]
    restarts: list[Restart]
    attempts: dict[int, list[RestartAttempt]] = field(default_factory=dict)
    left_failed: list[LeftFailed] = field(default_factory=list)
    """Hosts that failed in an earlier run and that no restart since included."""


def encode_cursor(*parts: Any) -> str:
    raw = json.dumps([p.isoformat() if isinstance(p, dt.datetime) else p for p in parts])
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, arity: int) -> list[Any]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        parts = json.loads(base64.urlsafe_b64decode(padded.encode()))
        if not isinstance(parts, list) or len(parts) != arity:
            raise ValueError(cursor)
        return parts
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise Malformed(
            "invalid cursor", fields={"cursor": ["Not a cursor from this API."]}
        ) from None


def _row_id(value: Any) -> int:
    """A database row id from a cursor: a positive 63-bit integer."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 2**63:
        raise ValueError(value)
    return value


def _filtered(query: SelectT, filters: ExecutionFilters) -> SelectT:
    if filters.status:
        query = query.where(Execution.status.in_([s.upper() for s in filters.status]))
    if filters.account:
        query = query.where(Execution.account_alias == filters.account)
    if filters.job:
        query = query.where(Execution.job_id == filters.job)
    if filters.host:
        # IN (subquery), not a correlated EXISTS: SQLite would probe it once per execution.
        query = query.where(
            Execution.id.in_(
                select(HostFailure.execution_pk).where(HostFailure.host == filters.host)
            )
        )
    if filters.pending_restart:
        query = query.where(
            exists().where(
                Restart.execution_pk == Execution.id,
                Restart.state.in_(ACTIVE_RESTART_STATES),
            )
        )
    if filters.search:
        term = filters.search.strip()
        query = query.where(
            or_(
                Execution.execution_id.startswith(term, autoescape=True),
                Execution.job_id.startswith(term, autoescape=True),
            )
        )
    return query


def list_executions(
    session: Session, filters: ExecutionFilters, limit: int, cursor: str | None = None
) -> Page:
    """Newest activity first, keyset-paginated on (last_seen_at, id)."""
    query = _filtered(select(Execution), filters)
    if cursor:
        seen_raw, last_id = decode_cursor(cursor, 2)
        try:
            seen = dt.datetime.fromisoformat(seen_raw)
            last_id = _row_id(last_id)
        except (TypeError, ValueError):
            raise Malformed("invalid cursor", fields={"cursor": ["Not a cursor."]}) from None
        query = query.where(tuple_(Execution.last_seen_at, Execution.id) < tuple_(seen, last_id))
    query = query.order_by(Execution.last_seen_at.desc(), Execution.id.desc()).limit(limit + 1)
    rows = list(session.scalars(query))
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = encode_cursor(rows[-1].last_seen_at, rows[-1].id)
    return Page(rows, next_cursor)


def count_by_status(session: Session, filters: ExecutionFilters) -> dict[str, int]:
    without_status = ExecutionFilters(
        account=filters.account,
        job=filters.job,
        host=filters.host,
        pending_restart=filters.pending_restart,
        search=filters.search,
    )
    inner = _filtered(select(Execution.id, Execution.status), without_status).subquery()
    rows = session.execute(select(inner.c.status, func.count()).group_by(inner.c.status))
    return {status: count for status, count in rows}


def get_execution(session: Session, execution_id: str, lock: bool = False) -> Execution:
    """The execution by its Runner id; `lock` holds its row until the transaction ends."""
    query = select(Execution).where(Execution.execution_id == execution_id)
    if lock:
        query = locked(session, query.execution_options(populate_existing=True))
    execution = session.scalars(query).one_or_none()
    if execution is None:
        raise NotFound(f"no execution {quoted(execution_id)}")
    return execution


def execution_detail(session: Session, execution_id: str) -> ExecutionDetail:
    execution = get_execution(session, execution_id)
    pk = execution.id
    runs = list(
        session.scalars(
            select(ExecutionRun)
            .where(ExecutionRun.execution_pk == pk)
            .order_by(ExecutionRun.run_index)
        )
    )
    failures = list(
        session.scalars(
            select(HostFailure)
            .where(HostFailure.execution_pk == pk)
            .order_by(HostFailure.run_index, HostFailure.host)
        )
    )
    decisions = list(
        session.scalars(select(Decision).where(Decision.execution_pk == pk).order_by(Decision.id))
    )
    restarts = list(
        session.scalars(select(Restart).where(Restart.execution_pk == pk).order_by(Restart.id))
    )
    attempts: dict[int, list[RestartAttempt]] = {r.id: [] for r in restarts}
    if restarts:
        for attempt in session.scalars(
            select(RestartAttempt)
            .where(RestartAttempt.restart_id.in_(attempts))
            .order_by(RestartAttempt.id)
        ):
            attempts[attempt.restart_id].append(attempt)
    job = session.get(Job, execution.job_id) if execution.job_id else None
    return ExecutionDetail(
        execution,
        job,
        runs,
        failures,
        decisions,
        restarts,
        attempts,
        left_failed(execution, failures, restarts, decisions),
    )


def list_events(
    session: Session, execution: Execution, limit: int, cursor: str | None = None
) -> Page:
    """An execution's deliveries in the order they were received, keyset on id."""
    query = select(Event).where(Event.execution_pk == execution.id)
    if cursor:
        (after_id,) = decode_cursor(cursor, 1)
        try:
            after_id = _row_id(after_id)
        except ValueError:
            raise Malformed("invalid cursor", fields={"cursor": ["Not a cursor."]}) from None
        query = query.where(Event.id > after_id)
    rows = list(session.scalars(query.order_by(Event.id).limit(limit + 1)))
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = encode_cursor(rows[-1].id)
    return Page(rows, next_cursor)


def restart_with_execution(session: Session, restart_id: int) -> tuple[Restart, Execution]:
    """A restart and the execution it restarts (NotFound if there is no such restart)."""
    row = session.execute(
        select(Restart, Execution)
        .join(Execution, Execution.id == Restart.execution_pk)
        .where(Restart.id == restart_id)
    ).one_or_none()
    if row is None:
        raise NotFound(f"no restart {restart_id}")
    return row[0], row[1]


def known_accounts(session: Session) -> list[str]:
    """Every account respawn has seen an execution of."""
    return sorted(
        session.scalars(
            select(Execution.account_alias).where(Execution.account_alias != "").distinct()
        )
    )


def stored_decisions(session: Session, execution: Execution) -> list[Decision]:
    """The execution's decisions, oldest first."""
    return list(
        session.scalars(
            select(Decision).where(Decision.execution_pk == execution.id).order_by(Decision.id)
        )
    )


def latest_event_ms(session: Session, execution_ids: Sequence[str]) -> dict[str, int]:
    """For each execution with status events stored, the latest event's timestamp."""
    if not execution_ids:
        return {}
    rows = session.execute(
        select(Event.execution_id, func.max(Event.event_ms))
        .where(
            Event.execution_id.in_(list(execution_ids)),
            Event.kind == "event",
            Event.event_ms.is_not(None),
        )
        .group_by(Event.execution_id)
    )
    return {execution_id: int(latest) for execution_id, latest in rows if latest is not None}
