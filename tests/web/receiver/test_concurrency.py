"""Deliveries racing each other: the same event from many threads is stored once."""

from __future__ import annotations

import json
import threading
from collections import Counter
from pathlib import Path

from flask import Flask
from sqlalchemy import func, select, text

from app import create_app
from app.extensions import get_runtime
from app.models import Event, Execution
from tests.conftest import API_TOKEN, CALLBACK_TOKEN
from tests.feed import failing_run_events
from tests.helpers import transaction


def test_parallel_duplicate_deliveries_store_each_event_once(app: Flask) -> None:
    events = failing_run_events(1_700_000_000_000)
    outcomes: Counter[str] = Counter()
    lock = threading.Lock()
    barrier = threading.Barrier(6)

    def deliver() -> None:
        client = app.test_client()
        barrier.wait()
        for item in events:
            response = client.post(
                f"/callbacks/{CALLBACK_TOKEN}",
                data=json.dumps(item),
                content_type="application/json",
            )
            with lock:
                outcomes[str(response.status_code)] += 1
                if response.status_code == 202:
                    body = response.get_json()
                    outcomes["accepted"] += body["accepted"]
                    outcomes["duplicates"] += body["duplicates"]

    threads = [threading.Thread(target=deliver) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert outcomes["202"] == 6 * len(events)
    assert outcomes["accepted"] == len(events)
    assert outcomes["duplicates"] == 5 * len(events)
    with transaction(app) as session:
        assert session.scalar(select(func.count()).select_from(Event)) == len(events)
        assert session.scalar(select(func.count()).select_from(Execution)) == 1
        assert session.scalars(select(Execution.status)).one() == "FAILURE"


def test_reads_run_beside_a_writer_on_sqlite(sqlite_url: str, policy_file: Path) -> None:
    """SQLite only (PostgreSQL readers never wait for writers): a GET is answered while
    another transaction holds the database's write lock."""
    app = create_app(
        {
            "database_url": sqlite_url,
            "callback_tokens": (CALLBACK_TOKEN,),
            "api_tokens": (API_TOKEN,),
            "testing": True,
            "dispatcher": "off",
            "policy_file": str(policy_file),
            "log_level": "WARNING",
            "spool_dir": str(policy_file.parent / "spool"),
        }
    )
    holding, release = threading.Event(), threading.Event()

    def writer() -> None:
        with transaction(app) as session:  # BEGIN IMMEDIATE: holds the write lock
            session.execute(text("UPDATE executions SET status = status"))
            holding.set()
            release.wait(60)

    thread = threading.Thread(target=writer)
    thread.start()
    holding.wait(10)
    try:
        response = app.test_client().get(
            "/api/v1/executions", headers={"Authorization": f"Bearer {API_TOKEN}"}
        )
        answered_while_locked = not release.is_set()
    finally:
        release.set()
        thread.join()

    get_runtime(app).close()
    assert response.status_code == 200
    assert answered_while_locked
