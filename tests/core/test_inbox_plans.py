"""The inbox's reads of `events` use an index, never a scan of the whole table: the table
holds every event ever received, so a scan per batch grows with history (SQLite query plans;
the partial index `ix_events_pending` is used only when a query states its condition)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, event, text
from sqlalchemy.orm import Session, sessionmaker

from app.core.deliveries import parse_deliveries
from app.core.inbox import count_attempt, inbox_counts, pending_executions, process, store
from app.db import make_engine, make_sessionmaker, transaction
from app.policy import parse_policy
from tests.feed import EXECUTION_ID, failing_run_events

NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
T0 = 1_772_366_400_000
POLICY = parse_policy("version: 1\n", "test.yaml")


@pytest.fixture
def engine(sqlite_url: str) -> Iterator[Engine]:
    engine = make_engine(sqlite_url)
    yield engine
    engine.dispose()


def events_reads(engine: Engine, work: Any) -> list[tuple[str, Any]]:
    """The SELECTs and UPDATEs of `events` that `work` runs, with their parameters."""
    seen: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, params: Any, ctx: Any, many: bool) -> None:
        if "FROM events" in statement or "UPDATE events" in statement:
            seen.append((statement, params if not many else params[0]))

    event.listen(engine, "before_cursor_execute", record)
    try:
        work()
    finally:
        event.remove(engine, "before_cursor_execute", record)
    return seen


def plan(engine: Engine, statement: str, params: Any) -> str:
    with engine.connect() as connection:
        rows = connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", params).all()
    return "; ".join(str(row[-1]) for row in rows)


def test_the_inbox_never_scans_the_whole_events_table(engine: Engine) -> None:
    sessions: sessionmaker[Session] = make_sessionmaker(engine)
    body = failing_run_events(T0)
    for n in range(3):  # some history, applied
        with transaction(sessions) as session:
            deliveries = parse_deliveries(failing_run_events(T0, prefix=f"old{n}"), None, 500)
            store(session, deliveries, NOW)
            process(session, {EXECUTION_ID}, NOW, POLICY, defer_unknown_jobs=False)
    with transaction(sessions) as session:
        session.execute(text("ANALYZE"))

    def work() -> None:
        with transaction(sessions) as session:
            store(session, parse_deliveries(body, None, 500), NOW)
        with transaction(sessions) as session:
            pending_executions(session, 10, NOW + dt.timedelta(seconds=1))
            inbox_counts(session)
            count_attempt(session, [EXECUTION_ID])
            process(session, {EXECUTION_ID}, NOW, POLICY, defer_unknown_jobs=False)

    statements = events_reads(engine, work)
    assert len(statements) >= 5
    for statement, params in statements:
        if statement.startswith("INSERT"):
            continue
        shown = plan(engine, statement, params)
        assert "SCAN events" not in shown.replace("SCAN events USING", ""), (statement, shown)
