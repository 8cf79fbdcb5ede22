"""The inbox: deliveries are stored pending as they arrive, then applied to their executions.

`store` is all a callback needs before it is answered: one INSERT of the new deliveries, that
ignores the ones seen before (their delivery or webhook key exists), so a crash or a retry
never stores one twice. `process` applies pending deliveries execution by execution, in the
order they were stored, clears `pending` and decides every run that failed, in one
transaction: a crash before its commit leaves the deliveries pending, to be applied again.

Executions are locked in id order (PostgreSQL `FOR UPDATE`; SQLite has one writer), so two
processes may process at once: the second waits for the first and then finds only what is
still pending.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    BigInteger,
    Insert,
    Integer,
    Table,
    Text,
    bindparam,
    exists,
    func,
    literal,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from app.core.claims import ClaimedRestart
from app.core.decisions import DecideResult, decide_failed_runs
from app.core.deliveries import Delivery, document_deliveries, parse_item
from app.core.insights import record_restart_outcomes
from app.core.runs import ExecutionState, apply_document, apply_event, document_run
from app.db import UTCDateTime, insert_ignoring_conflicts
from app.models import Event, Execution, ExecutionRun
from app.policy import Policy
from app.runner.documents import DocumentError, ExecutionDocument, StatusEvent

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 5
"""Tries at applying a pending delivery before it is left aside (logged, counted)."""

_EVENTS: Table = Event.__table__  # type: ignore[assignment]  # a declarative model's Table
_EXECUTIONS: Table = Execution.__table__  # type: ignore[assignment]
_PENDING = text("events.pending")
"""`WHERE events.pending`, bare: the condition of the partial index `ix_events_pending`, which
SQLite uses only when the query states it in the same words (`pending IS 1` reads the whole
table)."""


@dataclass
class Stored:
    """What `store` did with each delivery: new (stored) or a duplicate."""

    new: list[bool]

    @property
    def accepted(self) -> int:
        return sum(self.new)

    @property
    def duplicates(self) -> int:
        return len(self.new) - self.accepted


def store(session: Session, deliveries: Sequence[Delivery], now: dt.datetime) -> Stored:
    """Insert the deliveries not seen before, pending; flush, never commit.

    A delivery is a duplicate when its delivery key or webhook key is stored already, or
    appears earlier in `deliveries`.
    """
    seen: set[str] = set()
    rows: list[dict[str, Any]] = []
    first: list[Delivery | None] = []
    for delivery in deliveries:
        keys = {delivery.delivery_key, delivery.webhook_key or delivery.delivery_key}
        if keys & seen:
            first.append(None)
            continue
        seen |= keys
        rows.append(delivery.row(now))
        first.append(delivery)
    inserted: set[str] = set()
    if rows and session.get_bind().dialect.name == "postgresql":
        batch = [
            {name: row[name] for name in _STORED_COLUMNS}
            | {"payload": row["payload"], "event_at": _iso(row["event_at"]), "n": n}
            for n, row in enumerate(rows)
        ]
        inserted = set(session.scalars(_STORE_ALL, {"rows": json.dumps(batch), "now": now}))
    elif rows:
        statement = insert_ignoring_conflicts(session, _EVENTS, "delivery_key")
        inserted = set(session.scalars(statement, rows))
    return Stored([d is not None and d.delivery_key in inserted for d in first])


_STORED_COLUMNS = (
    "execution_id",
    "delivery_key",
    "webhook_key",
    "kind",
    "event_type",
    "event_id",
    "host",
    "status",
    "event_ms",
)
_STORE_ALL = text(
    """
    INSERT INTO events (execution_id, delivery_key, webhook_key, kind, event_type, event_id,
                        host, status, event_ms, event_at, payload, pending, attempts,
                        received_at)
    SELECT r.execution_id, r.delivery_key, r.webhook_key, r.kind, r.event_type, r.event_id,
           r.host, r.status, r.event_ms, r.event_at, r.payload, true, 0, :now
    FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS r(
        execution_id text, delivery_key text, webhook_key text, kind text, event_type text,
        event_id text, host text, status text, event_ms bigint, event_at timestamptz,
        payload jsonb, n integer)
    ORDER BY r.n
    ON CONFLICT DO NOTHING
    RETURNING delivery_key
    """
).bindparams(bindparam("now", type_=UTCDateTime), bindparam("rows", type_=Text))
"""Store a batch in one statement on PostgreSQL, its rows as one JSON document, in their
order. One fixed statement, prepared once, and one parameter the C JSON encoder writes: a
multi-row VALUES list is new text for every batch size, which the driver parsed afresh each
time, and arrays it quotes element by element in Python (either way, most of the writer's
time for arrays of events)."""


def _iso(at: dt.datetime | None) -> str | None:
    return at.isoformat() if at is not None else None


def store_applied(
    session: Session, state: ExecutionState, document: ExecutionDocument, now: dt.datetime
) -> bool:
    """Store a document respawn fetched about `state`'s execution, which the caller holds
    locked and loaded, and apply it at once rather than pending; False (nothing applied) for
    a duplicate, which `store` would skip. Flushes, never commits.

    What `process` would do for it, without the round trip (find it pending, lock and read
    the execution again): deliveries of the execution still pending stay for the intake,
    applied after this one, and since an execution only moves forward, that ends as if this
    one had been delivered first.
    """
    (delivery,) = document_deliveries([document])
    row = delivery.row(now) | {
        "pending": False,
        "execution_pk": state.execution.id,
        "run_index": document_run(document),
    }
    statement = insert_ignoring_conflicts(session, _EVENTS, "id")
    if session.scalar(statement, row) is None:
        return False
    apply_item(session, state, document, now)
    state.finish()
    record_restart_outcomes(session, state.settled)
    return True


@dataclass
class Processed:
    """What `process` applied: deliveries, the executions they touched, decisions."""

    applied: int = 0
    executions: dict[str, Execution] = field(default_factory=dict)
    decided: DecideResult = field(default_factory=DecideResult)
    unreadable: int = 0
    claimed: list[ClaimedRestart] = field(default_factory=list)
    """Restarts claimed as they were queued (`app.core.claims`), to hand on once committed."""


def process(
    session: Session,
    execution_ids: Collection[str],
    now: dt.datetime,
    policy: Policy | None,
    *,
    defer_unknown_jobs: bool,
    parsed: Mapping[str, ExecutionDocument | StatusEvent] | None = None,
    leave_big: bool = False,
) -> Processed:
    """Apply the pending deliveries of these executions in stored order, and decide (unless
    `policy` is None: documents respawn fetched itself are recorded, not decided).

    `parsed` maps delivery keys to items already parsed (the request that stored them);
    others are read back from their stored payload. `leave_big`: runs naming thousands of
    failed hosts are left undecided, named in the result (`app.core.big_runs`). Flushes,
    never commits.
    """
    result = Processed()
    ids = sorted(set(execution_ids))
    if not ids:
        return result
    # Lock first, then read what is pending: another process may be applying the same
    # deliveries (its callbacks, or its sweep) and has cleared them once it lets go. The
    # executions asked for have deliveries pending (stored by the caller, or found by the
    # sweep), so none is created for nothing.
    states = load_states(session, ids, now)
    rows = session.execute(_PENDING_ROWS, {"ids": ids}).all()
    if not rows:
        return result
    known = parsed or {}
    # Payloads are read back only for what the caller did not parse (a sweep, a retry).
    unparsed = [row.id for row in rows if row.delivery_key not in known]
    payloads: dict[int, Any] = {}
    if unparsed:
        payloads = {i: payload for i, payload in session.execute(_PAYLOADS, {"ids": unparsed})}
    done: list[dict[str, Any]] = []
    for row in rows:
        item = known.get(row.delivery_key)
        if item is None:
            try:
                item = parse_item(payloads[row.id])
            except DocumentError:
                # Stored after validation, so only a changed parser gets here: keep it aside.
                log.error("inbox: stored delivery %s can no longer be read", row.id)
                result.unreadable += 1
                continue
        state = states[row.execution_id]
        run_index = apply_item(session, state, item, row.received_at or now)
        done.append({"b_id": row.id, "b_pk": state.execution.id, "b_run": run_index})
        result.applied += 1
        result.executions[row.execution_id] = state.execution
    for state in states.values():
        state.finish()
    session.flush()
    # Judged once the batch is applied: a run's closing stats name its failed hosts after
    # its final status.
    record_restart_outcomes(session, [i for state in states.values() for i in state.settled])
    if done:
        _mark_applied(session, done)
    if policy is not None:
        result.decided = decide_failed_runs(
            session,
            result.executions.values(),
            now,
            policy,
            defer_unknown_jobs=defer_unknown_jobs,
            leave_big=leave_big,
        )
    return result


_PENDING_ROWS = (
    select(
        _EVENTS.c.id,
        _EVENTS.c.execution_id,
        _EVENTS.c.delivery_key,
        _EVENTS.c.received_at,
    )
    .where(
        _PENDING,
        _EVENTS.c.execution_id.in_(bindparam("ids", expanding=True)),
        _EVENTS.c.attempts < MAX_ATTEMPTS,
    )
    .order_by(_EVENTS.c.id)
)
"""The deliveries of these executions still to apply, in stored order. The statements
`process` runs for every batch are built once: building one (and its cache key) costs about
as much as running it on SQLite."""
_PAYLOADS = select(_EVENTS.c.id, _EVENTS.c.payload).where(
    _EVENTS.c.id.in_(bindparam("ids", expanding=True))
)
"""The stored payloads of deliveries to apply that nobody parsed in this process."""
_APPLIED = (
    update(_EVENTS)
    .where(_EVENTS.c.id == bindparam("b_id"))
    .values(pending=False, execution_pk=bindparam("b_pk"), run_index=bindparam("b_run"))
)
"""Mark one applied delivery (run once per row)."""
_APPLIED_ROWS = (
    func.unnest(
        bindparam("ids", type_=ARRAY(BigInteger)),
        bindparam("pks", type_=ARRAY(Integer)),
        bindparam("runs", type_=ARRAY(Integer)),
    )
    .table_valued("id", "pk", "run")
    .render_derived()
)
_APPLIED_ALL = (
    update(_EVENTS)
    .where(_EVENTS.c.id == _APPLIED_ROWS.c.id)
    .values(pending=False, execution_pk=_APPLIED_ROWS.c.pk, run_index=_APPLIED_ROWS.c.run)
)
"""Mark a batch's applied deliveries in one statement (PostgreSQL: the rows as arrays)."""


def _mark_applied(session: Session, done: list[dict[str, Any]]) -> None:
    """Clear `pending` and record the execution and run of each applied delivery. On
    PostgreSQL one UPDATE joins the batch's rows as arrays: a statement per row, as SQLite
    takes them at little cost in-process, costs a round of the server's work each (half the
    processor's time for arrays of events)."""
    options = {"synchronize_session": False}
    if session.get_bind().dialect.name == "postgresql":
        rows = {
            "ids": [d["b_id"] for d in done],
            "pks": [d["b_pk"] for d in done],
            "runs": [d["b_run"] for d in done],
        }
        session.execute(_APPLIED_ALL, rows, execution_options=options)
    else:
        session.execute(_APPLIED, done, execution_options=options)


def apply_item(
    session: Session,
    state: ExecutionState,
    item: ExecutionDocument | StatusEvent,
    received_at: dt.datetime,
) -> int:
    """Apply one delivery to its execution's state; the run it belongs to."""
    execution = state.execution
    if item.account_alias and not execution.account_alias:
        execution.account_alias = item.account_alias
    if item.job_id and not execution.job_id:
        execution.job_id = item.job_id
    if received_at > execution.last_seen_at:
        execution.last_seen_at = received_at
    if isinstance(item, StatusEvent):
        return apply_event(session, state, item, received_at)
    return apply_document(session, state, item, received_at)


def load_states(
    session: Session, execution_ids: Sequence[str], now: dt.datetime
) -> dict[str, ExecutionState]:
    """The executions (created if new) locked in id order, with their runs. Those this
    transaction created have no runs or failures yet: they are not read."""
    ids = sorted(set(execution_ids))
    runs: dict[int, list[ExecutionRun]] = {}
    if session.get_bind().dialect.name == "postgresql":
        # Create the missing ones before locking any: a process that waits for another's
        # insert then holds no row lock the other waits for (each locks in id order after).
        created = set(session.scalars(_CREATE_MISSING, {"ids": ids, "now": now}))
        executions = list(session.scalars(_LOAD_LOCKED, {"ids": ids}))
        runs = {e.id: [] for e in executions}
        known = [e.id for e in executions if e.execution_id not in created]
        if known:
            for run in session.scalars(_RUNS, {"pks": known}):
                runs[run.execution_pk].append(run)
    else:
        # One writer, whose transaction holds the write lock: most batches name executions
        # that exist already, read with their runs in one statement; the missing ones are
        # created here, where no other writer can, so they have none.
        found: dict[int, Execution] = {}
        for execution, run in session.execute(_LOAD_WITH_RUNS, {"ids": ids}):
            found[execution.id] = execution
            runs.setdefault(execution.id, [])
            if run is not None:
                runs[execution.id].append(run)
        missing = sorted(set(ids) - {e.execution_id for e in found.values()})
        created = _create(session, missing, now)
        executions = list(found.values())
        if missing:
            executions += session.scalars(_LOAD, {"ids": missing})
            executions.sort(key=lambda e: e.execution_id)
    return {
        e.execution_id: ExecutionState(e, runs.get(e.id, []), new=e.execution_id in created)
        for e in executions
    }


def _create(session: Session, missing: list[str], now: dt.datetime) -> set[str]:
    """Insert these executions; those inserted here (another process may create one
    meanwhile: it is skipped, not an error)."""
    if not missing:
        return set()
    statement = insert_ignoring_conflicts(session, _EXECUTIONS, "execution_id")
    return set(session.scalars(statement, [_new_execution(i, now) for i in missing]))


_LOAD = (
    select(Execution)
    .where(Execution.execution_id.in_(bindparam("ids", expanding=True)))
    .order_by(Execution.execution_id)
    .execution_options(populate_existing=True)
)
_LOAD_LOCKED = _LOAD.with_for_update()
"""`_LOAD` on PostgreSQL: the rows locked, in id order (as `app.db.locked` would)."""
_LOAD_WITH_RUNS = (
    select(Execution, ExecutionRun)
    .outerjoin(ExecutionRun, ExecutionRun.execution_pk == Execution.id)
    .where(Execution.execution_id.in_(bindparam("ids", expanding=True)))
    .order_by(Execution.execution_id)
    .execution_options(populate_existing=True)
)
"""`_LOAD` with each execution's runs, a row per run (SQLite: nothing to lock)."""
_RUNS = select(ExecutionRun).where(ExecutionRun.execution_pk.in_(bindparam("pks", expanding=True)))


def _new_execution(execution_id: str, now: dt.datetime) -> dict[str, Any]:
    return {
        "execution_id": execution_id,
        "account_alias": "",
        "job_id": "",
        "status": "PENDING",
        "run_index": 0,
        "status_rank": -1,
        "run_count": 1,
        "failed_hosts": [],
        "first_seen_at": now,
        "last_seen_at": now,
        "restart_count": 0,
    }


def _create_missing() -> Insert:
    """PostgreSQL: create the executions not there yet, as `_new_execution` would, in one
    statement (built once); only those inserted here come back."""
    named = func.unnest(bindparam("ids", type_=ARRAY(Text))).table_valued("id").render_derived()
    now = bindparam("now", type_=UTCDateTime)
    values: dict[str, Any] = {
        name: literal(value, type_=_EXECUTIONS.c[name].type)
        for name, value in _new_execution("", dt.datetime.min).items()
    }
    values |= {"execution_id": named.c.id, "first_seen_at": now, "last_seen_at": now}
    return (
        postgresql.insert(_EXECUTIONS)
        .from_select(
            list(values),
            select(*values.values()).where(
                ~exists().where(_EXECUTIONS.c.execution_id == named.c.id)
            ),
        )
        .on_conflict_do_nothing()
        .returning(_EXECUTIONS.c.execution_id)
    )


_CREATE_MISSING = _create_missing()


def pending_executions(session: Session, limit: int, before: dt.datetime) -> list[str]:
    """Executions with deliveries still pending that were stored before `before`, oldest
    first: what a crash or a failed batch left behind."""
    rows = session.execute(
        select(_EVENTS.c.execution_id)
        .where(
            _PENDING,
            _EVENTS.c.received_at < before,
            _EVENTS.c.attempts < MAX_ATTEMPTS,
        )
        .order_by(_EVENTS.c.id)
        .limit(limit * 20)
    )
    found: dict[str, None] = {}
    for (execution_id,) in rows:
        found.setdefault(execution_id)
        if len(found) >= limit:
            break
    return list(found)


def count_attempt(session: Session, execution_ids: Collection[str]) -> None:
    """A batch with these executions failed to apply: count a try on their pending rows."""
    session.execute(
        update(_EVENTS)
        .where(_PENDING, _EVENTS.c.execution_id.in_(list(execution_ids)))
        .values(attempts=_EVENTS.c.attempts + 1)
    )


def inbox_counts(session: Session) -> dict[str, int]:
    """Deliveries stored but not applied yet (`pending`), and those left aside after
    `MAX_ATTEMPTS` failed tries (`stuck`)."""
    pending = func.count()
    stuck = func.count().filter(_EVENTS.c.attempts >= MAX_ATTEMPTS)
    row = session.execute(select(pending, stuck).where(_PENDING)).one()
    return {"pending": int(row[0] or 0), "stuck": int(row[1] or 0)}
