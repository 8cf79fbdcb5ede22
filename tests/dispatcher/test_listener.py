"""Wake-ups across processes on PostgreSQL: a restart queued by one process wakes the
dispatchers of the others at once (NOTIFY on commit, app/dispatcher/listener.py), not at
their next look. SQLite has no such channel and needs none."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
import requests
from flask import Flask

from app.db import announce_restart, make_engine
from app.dispatcher import Background
from app.dispatcher import listener as listener_module
from app.dispatcher.listener import Listener
from app.extensions import get_runtime
from app.runner import RunnerClient
from tests.conftest import CALLBACK_TOKEN
from tests.feed import failing_run_events
from tests.helpers import counted_statements, transaction

T0 = int(time.time() * 1000) - 60_000


def _client() -> RunnerClient:
    return RunnerClient(
        requests.Session(), "http://127.0.0.1:9", "http://127.0.0.1:9", None, None, "token"
    )


def _is_postgres(app: Flask) -> bool:
    return get_runtime(app).engine.dialect.name == "postgresql"


@contextmanager
def running(listener: Listener) -> Iterator[threading.Thread]:
    """The listener's thread, as the background runs it, until the block ends."""
    stop = threading.Event()
    thread = threading.Thread(target=listener.run_forever, args=(stop,), daemon=True)
    thread.start()
    try:
        yield thread
    finally:
        stop.set()
        thread.join(10)


def test_only_a_committed_announcement_is_heard(app: Flask) -> None:
    runtime = get_runtime(app)
    if not _is_postgres(app):
        # No channel on SQLite: the announcement costs nothing and nothing listens.
        with counted_statements(runtime.engine) as statements, transaction(app) as session:
            announce_restart(session)
        assert statements == []
        made = Background(runtime, _client(), dispatchers=1, reconcile=False)
        assert made.listener is None
        return
    heard = threading.Event()
    listener = Listener(runtime.engine, heard.set, own="another process")
    with running(listener):
        assert listener.listening.wait(10), "the listener did not start listening"

        class Undone(Exception):
            pass

        with pytest.raises(Undone), transaction(app) as session:
            announce_restart(session)
            announce_restart(session)  # once per transaction
            raise Undone
        assert not heard.wait(1.5), "a rolled-back announcement was delivered"

        with counted_statements(runtime.engine) as statements, transaction(app) as session:
            announce_restart(session)
            announce_restart(session)
        assert sum("pg_notify" in s for s in statements) == 1
        assert heard.wait(10), "a committed announcement was not delivered"


def test_a_restart_queued_by_another_process_wakes_this_ones_dispatcher(
    make_app: Callable[..., Flask],
) -> None:
    """Two runtimes on one database, as two processes: the first takes the callback and
    queues the restart; the second's idle dispatcher, whose next look is a minute away, is
    woken by the announcement."""
    receiving = make_app()
    other = make_app(dispatch_interval=60.0)
    made = Background(get_runtime(other), _client(), dispatchers=1, reconcile=False)
    if not _is_postgres(other):
        assert made.listener is None
        return
    assert made.listener is not None
    made.listener.own = "another process"  # what a second process's token would be
    dispatcher = made.dispatchers[0]
    dispatcher.idle = True  # between passes, its next look a minute away
    with running(made.listener):
        assert made.listener.listening.wait(10)
        answer = receiving.test_client().post(
            f"/callbacks/{CALLBACK_TOKEN}", json=failing_run_events(T0, execution_id="exec-x")
        )
        assert answer.status_code == 202
        deadline = time.monotonic() + 10
        while not dispatcher._wake.is_set() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert dispatcher._wake.is_set(), "the other process's dispatcher slept on"


def test_the_announcing_process_passes_over_its_own_announcements(app: Flask) -> None:
    """The process that queued the restart woke its own dispatchers: its listener waking
    them again only had a second one race the first for the claim. Another's it hears."""
    runtime = get_runtime(app)
    if not _is_postgres(app):
        return
    own, theirs = threading.Event(), threading.Event()
    mine = Listener(runtime.engine, own.set)
    other = Listener(runtime.engine, theirs.set, own="another process")
    with running(mine), running(other):
        assert mine.listening.wait(10) and other.listening.wait(10)
        with transaction(app) as session:
            announce_restart(session)
        assert theirs.wait(10), "the other process did not hear it"
        assert not own.wait(1.0), "the announcing process woke itself a second time"


def test_a_listener_without_its_database_warns_once_and_stops_when_asked(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The database away: one warning for the outage (not one every few seconds), and
    still a prompt stop."""
    monkeypatch.setattr(listener_module, "RECONNECT_SECONDS", 0.02)
    engine = make_engine("postgresql+psycopg://respawn@127.0.0.1:1/nothing", lock_timeout=1.0)
    listener = Listener(engine, lambda: None)
    with (
        caplog.at_level(logging.DEBUG, logger="app.dispatcher.listener"),
        running(listener) as thread,
    ):
        deadline = time.monotonic() + 10
        while len(caplog.records) < 4 and time.monotonic() < deadline:
            time.sleep(0.02)
    engine.dispose()

    assert not thread.is_alive()
    levels = [r.levelno for r in caplog.records]
    assert len(levels) >= 4, "it did not keep trying"
    assert levels.count(logging.WARNING) == 1
    assert not listener.listening.is_set()
