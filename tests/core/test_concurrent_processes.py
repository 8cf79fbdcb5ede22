"""Two processes at once on PostgreSQL: the one that waits for the other's locks goes on with
what the other committed, never with what it read before waiting.

Each test holds a transaction open in one session, starts the competing one in a thread,
waits (polling PostgreSQL's lock table) until that one either blocks or finishes, then
commits the first. Without the locking under test the thread goes on with stale counts or
rows: it applies deliveries a second time, or decides beside the other (and fails on the
error signature both insert, or restarts past the budget).
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from app.core.deliveries import parse_deliveries
from app.core.inbox import Processed, process, store
from app.core.ingest import ingest_and_decide
from app.db import make_engine, make_sessionmaker, transaction
from app.models import Decision, Restart
from app.policy import parse_policy
from tests.conftest import PostgresServer
from tests.feed import failing_run_events

NOW = dt.datetime.now(dt.UTC)
T0 = int(NOW.timestamp() * 1000) - 60_000
BUDGET_OF_ONE = parse_policy(
    "version: 1\ndefaults: {backoff: {initial: 0s}}\n"
    "limits: {per_job: {restarts: 1, window: 1h}, per_host: null}\n",
    "budget.yaml",
)


@pytest.fixture
def engine(postgres_server: PostgresServer) -> Iterator[Engine]:
    name = postgres_server.create(template=postgres_server.template)
    engine = make_engine(postgres_server.url_for(name))
    try:
        yield engine
    finally:
        engine.dispose()
        postgres_server.drop(name)


def run_blocked(engine: Engine, work: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    """Start `work` in a thread; return once it waits for a lock (or has finished)."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["result"] = work()
        except Exception as exc:  # noqa: BLE001  (re-raised in the test's thread)
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    with engine.connect() as watcher:
        while thread.is_alive():
            waiting = watcher.execute(
                text("SELECT count(*) FROM pg_locks WHERE NOT granted")
            ).scalar_one()
            if waiting:
                break
            assert time.monotonic() < deadline, "the second transaction neither waited nor ended"
            time.sleep(0.02)
    return thread, outcome


def finish(thread: threading.Thread, outcome: dict[str, Any]) -> Any:
    thread.join(20)
    assert not thread.is_alive()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def test_two_processes_deciding_at_once_share_one_budget(engine: Engine) -> None:
    sessions: sessionmaker[Session] = make_sessionmaker(engine)
    first, second = (
        parse_deliveries(failing_run_events(T0, execution_id=e, prefix=e), None, 500)
        for e in ("exec-one", "exec-two")
    )

    def decide(deliveries: list[Any]) -> int:
        with transaction(sessions) as session:
            found = ingest_and_decide(session, deliveries, NOW, BUDGET_OF_ONE, False)
            return found.decided.queued

    with transaction(sessions) as session:
        ingested = ingest_and_decide(session, first, NOW, BUDGET_OF_ONE, False)
        assert ingested.decided.queued == 1  # not committed yet
        thread, outcome = run_blocked(engine, lambda: decide(second))
    queued = finish(thread, outcome)

    with sessions() as session:
        codes = sorted(session.scalars(select(Decision.reason_code)))
        restarts = session.scalar(select(func.count()).select_from(Restart))
    assert (queued, restarts, codes) == (0, 1, ["budget_per_job", "restart"])


def test_deliveries_another_process_applied_meanwhile_are_not_applied_again(
    engine: Engine,
) -> None:
    sessions: sessionmaker[Session] = make_sessionmaker(engine)
    deliveries = parse_deliveries(failing_run_events(T0), None, 500)
    with transaction(sessions) as session:
        store(session, deliveries, NOW)
    execution_id = deliveries[0].execution_id

    def apply() -> Processed:
        with transaction(sessions) as session:
            return process(session, {execution_id}, NOW, None, defer_unknown_jobs=False)

    with transaction(sessions) as session:
        first = process(session, {execution_id}, NOW, None, defer_unknown_jobs=False)
        assert first.applied == len(deliveries)  # not committed yet
        thread, outcome = run_blocked(engine, apply)
    second: Processed = finish(thread, outcome)

    assert second.applied == 0
