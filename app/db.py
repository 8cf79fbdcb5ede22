"""Database wiring: the declarative base, column types, engines and the transaction style.

No Flask here: the web layer (`app.extensions`) opens one session per request; workers, CLI
commands and tests use `transaction(sessions)`, which commits on success and rolls back on
any exception. Core functions take a `Session`, `flush()` and never commit.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import functools
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from sqlalchemy import JSON, DateTime, Insert, MetaData, Select, Table, create_engine, event, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.pool import StaticPool
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

READ_ONLY = "respawn_read_only"
SelectT = TypeVar("SelectT", bound=Select[*tuple[Any, ...]])

JSONType = JSON().with_variant(JSONB(), "postgresql")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Aware UTC datetimes in and out, on databases that keep zones (PostgreSQL) or not."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _ensure_sqlite_folder(url: str) -> None:
    """The folder of an SQLite file must exist (the default lives in the instance folder)."""
    database = make_url(url).database
    if database not in (None, "", ":memory:"):
        Path(database).parent.mkdir(parents=True, exist_ok=True)


_HOLDS_WRITER = "respawn_writer_queue"


class WriterQueue:
    """Writers of one SQLite file, across this process's threads and other processes, take
    turns here rather than in SQLite's busy handler.

    SQLite lets one writer in at a time; the others retry in its busy handler, which sleeps
    in growing steps (up to 100 ms) and leaves the lock idle meanwhile: under load, writers
    spend most of their time asleep. Here a thread first takes this process's lock (the next
    waiter wakes at once), then an exclusive `flock` on a file beside the database, polled at
    sub-millisecond steps, so the lock changes hands within a fraction of a millisecond.
    """

    _queues: ClassVar[dict[tuple[int, str], WriterQueue]] = {}
    _queues_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, path: str) -> None:
        self._threads = threading.Lock()
        self._fd = os.open(path + "-writers", os.O_RDWR | os.O_CREAT, 0o600)

    @classmethod
    def for_database(cls, database: str | None) -> WriterQueue | None:
        """The queue of an SQLite file (shared by every engine of this process); None for an
        in-memory database."""
        if database in (None, "", ":memory:"):
            return None
        key = (os.getpid(), os.path.realpath(database))
        with cls._queues_lock:
            queue = cls._queues.get(key)
            if queue is None:
                queue = cls._queues[key] = cls(key[1])
            return queue

    def acquire(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        if not self._threads.acquire(timeout=max(timeout, 0.0)):
            return False
        delay = 0.0001
        while True:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    self._threads.release()
                    return False
                time.sleep(delay)
                delay = min(delay * 2, 0.001)

    def release(self) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        self._threads.release()


def _release_writer(connection: Any) -> None:
    writers = connection.info.pop(_HOLDS_WRITER, None)
    if writers is not None:
        writers.release()


def make_engine(url: str, lock_timeout: float = 30.0, **kwargs: Any) -> Engine:
    """An engine; SQLite gets WAL, a busy timeout and write-locking transactions.

    `lock_timeout`: how long a statement waits for a lock (SQLite's busy timeout; PostgreSQL's
    lock_timeout, with a connect timeout of the same length) before it fails.
    """
    if url.startswith("sqlite"):
        _ensure_sqlite_folder(url)
        connect_args = {"timeout": lock_timeout, "check_same_thread": False}
        busy_ms = int(lock_timeout * 1000)
        if url in {"sqlite://", "sqlite:///:memory:"}:
            kwargs.setdefault("poolclass", StaticPool)
        engine = create_engine(url, connect_args=connect_args, **kwargs)

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            # Let SQLAlchemy own BEGIN so every transaction can take the write lock up front;
            # a deferred transaction that reads, then writes, can fail at once with "locked".
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        writers = WriterQueue.for_database(make_url(url).database)

        @event.listens_for(engine, "begin")
        def _on_begin(connection: Any) -> None:
            # Readers (GET requests) must not take the write lock: WAL lets them run
            # beside a writer, and they would otherwise queue the receiver behind a page.
            if connection.get_execution_options().get(READ_ONLY, False):
                connection.exec_driver_sql("BEGIN")
                return
            if writers is not None:
                if not writers.acquire(lock_timeout):
                    # As SQLite says it when its own busy timeout runs out, so callers treat
                    # both the same way.
                    raise OperationalError(
                        "BEGIN IMMEDIATE",
                        None,
                        sqlite3.OperationalError("database is locked (writer queue)"),
                    )
                connection.info[_HOLDS_WRITER] = writers
            try:
                connection.exec_driver_sql("BEGIN IMMEDIATE")
            except BaseException:
                _release_writer(connection)
                raise

        event.listen(engine, "commit", _release_writer)
        event.listen(engine, "rollback", _release_writer)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 20)
    if lock_timeout < 30.0:
        wait_ms = max(int(lock_timeout * 1000), 1)
        kwargs.setdefault(
            "connect_args",
            {
                "connect_timeout": max(int(lock_timeout + 0.999), 1),
                # A server that stops answering mid-statement fails the call too.
                "tcp_user_timeout": wait_ms * 5,
                "options": f"-c lock_timeout={wait_ms} -c statement_timeout={wait_ms * 5}",
            },
        )
    return create_engine(url, **kwargs)


def locked(session: Session, query: SelectT, **options: Any) -> SelectT:
    """`query` with FOR UPDATE on PostgreSQL; on SQLite every write transaction already holds
    the database's write lock (BEGIN IMMEDIATE)."""
    if session.get_bind().dialect.name == "postgresql":
        return query.with_for_update(**options)
    return query


DECISION_LOCK = 0x72657370  # any constant; "resp"


def lock_decisions(session: Session) -> None:
    """Take the decision lock until the transaction ends. Budgets, quarantine and the
    breakers count what earlier decisions stored, so two processes must not decide at once
    (each would count without the other's uncommitted restart). SQLite has one writer."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": DECISION_LOCK})


RESTARTS_CHANNEL = "respawn_restarts"
"""PostgreSQL NOTIFY channel: a transaction queued a restart that is due now."""
_ANNOUNCED = "respawn_announced"


def announce_restart(session: Session) -> None:
    """Tell the other processes' dispatchers, once this transaction commits, that a restart
    is due (PostgreSQL `NOTIFY`; a rollback drops it). Without it, a process other than the
    one that queued the restart finds it only at its next look (`RESPAWN_DISPATCH_INTERVAL`).
    Once per transaction; SQLite has one process's worth of writers and needs none.

    The payload names this process (`process_token`): its own listener lets it pass, since
    whatever queues a restart wakes its own process's dispatchers after the commit anyway.
    """
    if session.get_bind().dialect.name != "postgresql":
        return
    root = session.get_transaction()
    if session.info.get(_ANNOUNCED) is root:
        return
    session.execute(
        text("SELECT pg_notify(:channel, :sender)"),
        {"channel": RESTARTS_CHANNEL, "sender": process_token()},
    )
    session.info[_ANNOUNCED] = root


_token: tuple[int, str] | None = None


def process_token() -> str:
    """A name of this process, unique across hosts (a pid is not), and new after a fork."""
    global _token
    if _token is None or _token[0] != os.getpid():
        _token = (os.getpid(), uuid.uuid4().hex)
    return _token[1]


def insert_ignoring_conflicts(session: Session, table: Table, returning: str) -> Insert:
    """`INSERT ... ON CONFLICT DO NOTHING RETURNING <column>` on either database: rows whose
    unique keys exist are skipped, not errors, and only the inserted rows come back.

    Built once per database and table (the receiver runs it for every batch, and building a
    statement, with its cache key, costs about as much as running it on SQLite)."""
    return _ignoring_conflicts(session.get_bind().dialect.name, table, returning)


@functools.cache
def _ignoring_conflicts(dialect: str, table: Table, returning: str) -> Insert:
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return insert(table).on_conflict_do_nothing().returning(table.c[returning])


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    """Sessions whose objects stay readable after commit (views render them afterwards)."""
    return sessionmaker(bind=engine, expire_on_commit=False)


@contextmanager
def transaction(sessions: sessionmaker[Session]) -> Iterator[Session]:
    """`with transaction(sessions) as s:`: one unit of work, committed on success."""
    with sessions() as session, session.begin():
        yield session


def read_only(session: Session) -> Session:
    """Mark `session` as a reader: on SQLite its transaction does not take the write lock."""
    session.connection(execution_options={READ_ONLY: True})
    return session


def refresh_planner_statistics(engine: Engine) -> None:
    """SQLite plans with table statistics only when asked (cheap when they are fresh);
    PostgreSQL keeps its own by autovacuum."""
    if engine.dialect.name == "sqlite":
        with engine.begin() as connection:
            connection.exec_driver_sql("PRAGMA optimize")
