"""A database outage under a stream of callbacks: every callback is answered 202, spooled
while the database is away, and stored exactly once when it returns (docs/operations.md)."""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import create_engine, func, select

from app.models import Event
from tests.feed import event
from tests.system.processes import (
    TOKEN,
    base_env,
    migrate_cli,
    private_cluster,
    serve,
    wait_until,
)

pytestmark = pytest.mark.slow
NOW_MS = int(time.time() * 1000)


def unique_events(count: int) -> list[dict[str, Any]]:
    executions = [f"outage-{uuid.uuid4().hex[:8]}" for _ in range(count // 10 + 1)]
    return [
        event("runner_on_ok", NOW_MS + n, f"web{n % 7}", event_id=f"ev-{n}",
              execution_id=executions[n % len(executions)])
        for n in range(count)
    ]  # fmt: skip


class Sender:
    """Posts events one per request over two connections; remembers what was answered."""

    def __init__(self, base: str) -> None:
        self.url = f"{base}/callbacks/{TOKEN}"
        self.acknowledged: list[str] = []
        self.refused: list[tuple[str, int]] = []
        self._lock = threading.Lock()

    def send(self, events: list[dict[str, Any]]) -> None:
        halves = [events[0::2], events[1::2]]
        threads = [threading.Thread(target=self._post, args=(half,)) for half in halves]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def _post(self, events: list[dict[str, Any]]) -> None:
        with requests.Session() as http:
            for item in events:
                response = http.post(self.url, json=item, timeout=30)
                with self._lock:
                    if response.status_code == 202:
                        self.acknowledged.append(item["id"])
                    else:
                        self.refused.append((item["id"], response.status_code))


def stored_ids(url: str) -> tuple[list[str], int]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            ids = list(connection.scalars(select(Event.event_id)))
            pending = connection.scalar(
                select(func.count()).select_from(Event).where(Event.pending.is_(True))
            )
        return [i for i in ids if i is not None], int(pending or 0)
    finally:
        engine.dispose()


def assert_each_stored_once(url: str, sent: list[str], sender: Sender) -> None:
    def complete() -> bool:
        ids, pending = stored_ids(url)
        return len(ids) >= len(sent) and pending == 0

    wait_until(complete, 90, "every acknowledged event to be stored and applied", 0.25)
    ids, _ = stored_ids(url)
    assert sender.refused == []
    assert sorted(sender.acknowledged) == sorted(sent)
    assert sorted(ids) == sorted(sent)  # each exactly once


def test_postgres_stopped_mid_stream_loses_and_doubles_nothing(tmp_path: Path) -> None:
    with private_cluster() as cluster:
        env = base_env(cluster.url, tmp_path, RESPAWN_INTAKE_TIMEOUT="1", RESPAWN_DISPATCHER="off")
        migrate_cli(env)
        events = unique_events(360)
        with serve(env, tmp_path) as served:
            sender = Sender(served.base)
            sender.send(events[:120])
            cluster.stop()
            sender.send(events[120:240])
            intake = requests.get(f"{served.base}/readyz", timeout=10).json()
            cluster.start()
            sender.send(events[240:])
            assert_each_stored_once(cluster.url, [e["id"] for e in events], sender)
            back = requests.get(f"{served.base}/readyz", timeout=10).json()
    assert intake["ready"] is False and intake["checks"]["database"] == "unreachable"
    assert intake["checks"]["intake"]["spooled"] > 0
    assert back["ready"] is True and back["checks"]["intake"] == {
        "spooled": 0,
        "pending": 0,
        "stuck": 0,
    }
    assert list((tmp_path / "spool").glob("spool-*.jsonl")) == []


def test_sqlite_locked_past_its_timeout_loses_and_doubles_nothing(tmp_path: Path) -> None:
    database = tmp_path / "locked.db"
    url = f"sqlite:///{database}"
    env = base_env(url, tmp_path, RESPAWN_INTAKE_TIMEOUT="0.5", RESPAWN_DISPATCHER="off")
    migrate_cli(env)
    events = unique_events(240)
    with serve(env, tmp_path) as served:
        sender = Sender(served.base)
        sender.send(events[:80])
        holder = sqlite3.connect(database, isolation_level=None, timeout=30)
        holder.execute("BEGIN EXCLUSIVE")  # another program holds the database's write lock
        try:
            sender.send(events[80:160])
            spooled = requests.get(f"{served.base}/readyz", timeout=10).json()
        finally:
            holder.execute("COMMIT")
            holder.close()
        sender.send(events[160:])
        assert_each_stored_once(url, [e["id"] for e in events], sender)
    assert spooled["checks"]["intake"]["spooled"] > 0
