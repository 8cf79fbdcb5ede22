"""The intake: what happens to a callback between its parsing and its decision.

Two threads per web process. The **writer** takes the deliveries of every callback waiting
for it, stores them in one transaction (group commit: one INSERT and one commit for all of
them) and lets the callbacks answer; when the database cannot take them within
`intake_timeout` seconds, it appends them to the spool instead (fsync) and still lets them
answer. The **processor** then applies what was stored, execution by execution in stored
order, and decides every failed run (`app.core.inbox.process`), in batches; when idle it
picks up deliveries left pending by a crash and replays spooled ones once the database is
back.

Both take what is waiting only once their transaction has begun: on SQLite, beginning waits
for the database's one write lock, and whatever arrived meanwhile joins the batch, so under
load the batches grow instead of the queue (the cost of a transaction is mostly fixed). On
SQLite the writer also applies what it stored in the same transaction (`single_writer`):
every transaction there waits its turn at the one write lock, and one turn per batch rather
than two (store, then apply) is what the single writer can afford; the processor then only
takes what the writer could not apply. On PostgreSQL writers do not wait for each other, so
the processor applies beside the writer and a callback is answered once stored; the writer
stays at most a batch ahead of it (`BACKLOG_LIMIT`), so the inbox does not grow under load.

A callback's answer waits for the writer (`RESPAWN_CALLBACK_ACK=durable`, the default) or
also for the processor (`processed`).
"""

from __future__ import annotations

import datetime as dt
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable

from sqlalchemy.exc import DBAPIError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from app import metrics
from app.core.big_runs import undecided_big_runs
from app.core.claims import ClaimedRestart, claim_when_queued, claimed_when_queued
from app.core.decisions import DecideResult
from app.core.deliveries import Delivery
from app.core.inbox import (
    Processed,
    Stored,
    count_attempt,
    pending_executions,
    process,
    store,
)
from app.core.notifications import Notice, notify
from app.db import transaction, utcnow
from app.intake.big_runs import BigRuns
from app.intake.counting import count_received
from app.intake.spool import Spool, Spooled
from app.intake.tickets import MAX_BATCH, Answer, Backlog, Ticket, take, take_more
from app.policy import Policy
from app.runner.documents import ExecutionDocument, StatusEvent
from app.threads import start_thread

log = logging.getLogger(__name__)

SINGLE_WRITER_BATCH = 200
"""Deliveries stored and applied in one transaction at most on a database with one writer
(SQLite): the transaction holds the write lock, and every callback waits behind it for its
202, so a smaller batch keeps that wait short. Where writers do not wait for each other
(PostgreSQL), a batch of up to `MAX_BATCH` shares one commit."""
SWEEP_SECONDS = 2.0
"""How often an idle processor looks for leftovers (pending rows, spooled records)."""
LEFTOVER_AGE = dt.timedelta(seconds=5)
"""Pending rows younger than this belong to a live process's processor, not to the sweep."""
REPLAY_SECONDS = 1.0
"""While the database is away, how often the writer tries to store what it spooled."""
BACKLOG_LIMIT = MAX_BATCH
"""Deliveries stored but not yet applied, at most, before the writer stores more: where the
processor applies beside the writer (PostgreSQL), storing is cheaper than applying, and a
writer that ran ahead would fill the inbox faster than it drains, each delivery waiting
longer for its decision, while the CPU it took to store them is taken from applying. At one
batch ahead, the processor always finds a full batch waiting and none waits long."""
BACKLOG_WAIT = 0.5
"""How long the writer waits, at most, for the backlog to drain below `BACKLOG_LIMIT`. A
processor that stalls (a long batch: a spool replayed, a batch retried one execution at a
time) holds callbacks back once by this much, not once a batch: the writer does not wait
for it again until it finishes a batch (`Backlog.wait_below`), so no callback waits its
way to a 503."""


# The database did not answer, or not in time: spool and answer anyway.
_UNAVAILABLE = (OperationalError, DBAPIError)


class IntakeUnavailable(RuntimeError):
    """Neither the database nor the spool could take a callback: it was not stored."""


class Intake:
    """The writer and processor threads of one process; started on first use."""

    def __init__(
        self,
        writer_sessions: sessionmaker[Session],
        sessions: sessionmaker[Session],
        spool: Spool,
        policy: Callable[[], Policy],
        defer_unknown_jobs: bool,
        on_queued: Callable[[bool], None],
        single_writer: bool = False,
        claim_for: Callable[[], tuple[str, float] | None] = lambda: None,
        hand: Callable[[list[ClaimedRestart]], None] = lambda claims: None,
    ) -> None:
        """`single_writer`: the database takes one writer at a time (SQLite). The writer then
        applies what it stores in the same transaction, and batches are bounded by
        `SINGLE_WRITER_BATCH`.

        `claim_for`: the lease (holder, seconds) under which restarts queued due now are
        claimed in the transaction that queues them, while a dispatcher of this process
        waits (None otherwise); `hand` gets those claims once the transaction committed."""
        self.writer_sessions = writer_sessions
        self.sessions = sessions
        self.spool = spool
        self.policy = policy
        self.defer_unknown_jobs = defer_unknown_jobs
        self.on_queued = on_queued
        self.claim_for = claim_for
        self.hand = hand
        self._incoming: queue.SimpleQueue[Ticket | None] = queue.SimpleQueue()
        self._stored: queue.SimpleQueue[Ticket | None] = queue.SimpleQueue()
        self._backlog = Backlog()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._next_replay = 0.0
        self._apply_on_store = single_writer
        self._batch = SINGLE_WRITER_BATCH if single_writer else MAX_BATCH
        self.big_runs = BigRuns(sessions, policy, defer_unknown_jobs, claim_for, self._decided)

    # --- the callback's side ----------------------------------------------------------------

    def submit(self, deliveries: list[Delivery], wait_processed: bool, timeout: float) -> Answer:
        """Hand a callback's deliveries over; returns once they are durable (or processed).

        IntakeUnavailable when they could be neither stored nor spooled in `timeout` seconds.
        """
        self._start()
        ticket = Ticket(deliveries)
        self._incoming.put(ticket)
        if not ticket.durable.wait(timeout) or ticket.failed:
            raise IntakeUnavailable("the callback could not be stored")
        if wait_processed:
            ticket.processed.wait(timeout)
        return Answer(ticket.accepted, ticket.duplicates, ticket.spooled)

    # --- lifecycle --------------------------------------------------------------------------

    def _start(self) -> None:
        if self._threads:
            return
        with self._lock:
            if self._threads or self._stopping.is_set():
                return
            for name, target in (
                ("respawn-intake-writer", self._write_loop),
                ("respawn-intake-processor", self._process_loop),
            ):
                self._threads.append(start_thread(name, target))

    def close(self, timeout: float = 10.0) -> None:
        """Store and process what was handed over, then stop."""
        self._stopping.set()
        self._incoming.put(None)
        for thread in self._threads:
            thread.join(timeout)
        self.big_runs.close(timeout)
        self.spool.close()

    # --- the writer -------------------------------------------------------------------------

    def _write_loop(self) -> None:
        while True:
            self._backlog.wait_below(BACKLOG_LIMIT, BACKLOG_WAIT)
            tickets, stop = take(self._incoming, REPLAY_SECONDS, self._batch)
            try:
                if tickets:
                    stop = self._write(tickets, self._apply_on_store) or stop
                elif self.spool.has_records:
                    self._replay_own()  # quiet now: store what was spooled once it is back
            except Exception:
                log.exception("the intake writer failed a batch")
                _fail([t for t in tickets if not t.durable.is_set()])
            if stop:
                self._stored.put(None)
                return

    def _write(self, tickets: list[Ticket], apply: bool) -> bool:
        """Store the tickets, and those that arrive while the transaction begins; apply them
        too when `apply`. Whether the stop marker came with the latecomers."""
        now = utcnow()
        if self.spool.has_records and not self._replay_own():
            self._spool(tickets, _deliveries(tickets), now)  # keep the order: behind what waits
            return False
        stop = False
        stored: Stored | None = None
        result: Processed | None = None
        try:
            with transaction(self.writer_sessions) as session:
                session.connection()  # begun: on SQLite, the write lock is ours
                stop = take_more(self._incoming, tickets, self._batch)
                deliveries = _deliveries(tickets)
                stored = store(session, deliveries, now)
                _share(tickets, stored.new)  # which are new: what `apply` applies
                if apply:
                    result = self._process_tickets(session, tickets)
        except Exception as exc:
            if apply and stored is not None:
                # Storing worked, applying or the commit did not (and took the stored rows
                # with it): store them alone, for the processor to apply (or retry) on its
                # own; if the database is away, that spools them.
                log.warning("applying callbacks where they are stored failed: %r", exc)
                return self._write(tickets, apply=False) or stop
            if isinstance(exc, _UNAVAILABLE):
                log.warning("database unavailable: spooling %d callbacks", len(tickets))
                self._spool(tickets, _deliveries(tickets), now)
            else:
                log.exception("callbacks could not be stored")
                _fail(tickets)
            return stop
        metrics.EVENTS_STORED.inc(stored.accepted)
        metrics.EVENT_DUPLICATES.inc(stored.duplicates)
        count_received(deliveries, stored.new)
        for ticket in tickets:
            ticket.durable.set()
        if result is None:
            for ticket in tickets:
                self._to_process(ticket)
        else:
            self._processed(tickets, result)
        return stop

    def _spool(self, tickets: list[Ticket], deliveries: list[Delivery], now: dt.datetime) -> None:
        try:
            new = self.spool.append(deliveries, now)
        except OSError:
            log.exception("the spool could not take %d deliveries", len(deliveries))
            _fail(tickets)
            return
        _share(tickets, new)
        metrics.EVENTS_SPOOLED.inc(sum(new))
        count_received(deliveries, [False] * len(deliveries), spooled=new)
        metrics.SPOOL_DEPTH.set(self.spool.records)
        for ticket in tickets:
            ticket.spooled = True
            ticket.durable.set()
            ticket.processed.set()  # nothing to wait for: applied once replayed

    def _replay_own(self) -> bool:
        """Store this process's spooled records; True when the spool is empty again. Tried
        at most once per `REPLAY_SECONDS` while the database is away, so callbacks arriving
        meanwhile go straight to the spool."""
        now = time.monotonic()
        if now < self._next_replay:
            return False
        records = self.spool.own_records()
        if not self._store_replayed(records):
            self._next_replay = now + REPLAY_SECONDS
            return False
        self.spool.replayed()
        metrics.SPOOL_DEPTH.set(0)
        log.info("database back: %d spooled deliveries stored", len(records))
        return True

    def _tell_spooled(self, session: Session, records: list[Spooled]) -> None:
        """Notify that callbacks waited in the spool while the database was away (in the
        transaction that stores the last of them: told once they are all stored, and only
        then)."""
        first = min(r.received_at for r in records)
        last = max(r.received_at for r in records)
        summary = (
            f"{len(records)} callback deliveries were spooled while the database was away "
            f"({first:%Y-%m-%d %H:%M:%S} to {last:%H:%M:%S} UTC); all are stored now"
        )
        notify(
            session,
            self.policy(),
            Notice(
                "callbacks_spooled",
                f"callbacks_spooled:{first.isoformat()}:{len(records)}",
                summary,
                details={
                    "deliveries": len(records),
                    "from": first.isoformat(),
                    "to": last.isoformat(),
                },
            ),
            utcnow(),
        )

    def _store_replayed(self, records: list[Spooled]) -> bool:
        try:
            for start in range(0, len(records), MAX_BATCH):
                chunk = records[start : start + MAX_BATCH]
                with transaction(self.writer_sessions) as session:
                    # One insert per arrival time keeps each record's own received_at.
                    for at, group in _by_time(chunk):
                        store(session, group, at)
                    if start + MAX_BATCH >= len(records):
                        self._tell_spooled(session, records)
        except SQLAlchemyError:
            return False
        ticket = Ticket([r.delivery for r in records], new=[True] * len(records))
        ticket.durable.set()
        self._to_process(ticket)  # the processor applies them (read back from the database)
        return True

    def replay_orphans(self) -> int:
        """Store the spool files of processes that are gone; how many records."""
        replayed = 0
        with self.spool.orphans() as files:
            for path, records in files:
                if self._store_replayed(records):
                    path.unlink(missing_ok=True)
                    replayed += len(records)
        return replayed

    # --- the processor ----------------------------------------------------------------------

    def _to_process(self, ticket: Ticket) -> None:
        self._backlog.stored(ticket.accepted)
        self._stored.put(ticket)

    def _process_loop(self) -> None:
        while True:
            tickets, stop = take(self._stored, SWEEP_SECONDS, self._batch)
            try:
                if tickets:
                    stop = self._process(tickets) or stop
                elif not stop:
                    self._sweep()
            except Exception:
                log.exception("the intake processor failed; pending deliveries stay pending")
            finally:
                if tickets:
                    self._backlog.applied(sum(t.accepted for t in tickets))
            if stop:
                return

    def _process(self, tickets: list[Ticket]) -> bool:
        """Apply the tickets, and those stored while the transaction begins. Whether the
        stop marker came with the latecomers."""
        stop = False
        try:
            with transaction(self.sessions) as session:
                session.connection()  # begun: on SQLite, the write lock is ours
                stop = take_more(self._stored, tickets, self._batch)
                result = self._process_tickets(session, tickets)
        except Exception:  # noqa: BLE001  (retried one by one, each failure logged)
            log.warning("applying %d callbacks failed; one execution at a time now", len(tickets))
            result = self._one_by_one(_execution_ids(tickets), _parsed(tickets))
        self._processed(tickets, result)
        return stop

    def _process_tickets(self, session: Session, tickets: list[Ticket]) -> Processed:
        return self._run(session, _execution_ids(tickets), _parsed(tickets))

    def _run(
        self,
        session: Session,
        execution_ids: set[str],
        parsed: dict[str, ExecutionDocument | StatusEvent] | None,
    ) -> Processed:
        lease = self.claim_for()
        if lease is not None:
            claim_when_queued(session, *lease)
        result = process(
            session,
            execution_ids,
            utcnow(),
            self.policy(),
            defer_unknown_jobs=self.defer_unknown_jobs,
            parsed=parsed,
            leave_big=True,
        )
        result.claimed = claimed_when_queued(session)
        return result

    def _processed(self, tickets: list[Ticket], result: Processed) -> None:
        """Applied and decided: but a big run is decided next, by its own thread, and the
        tickets that touched one are processed once it is."""
        big = set(result.decided.big)
        now: list[Ticket] = []
        later: list[Ticket] = []
        for ticket in tickets:
            touched = any(d.execution_id in big for d in ticket.fresh())
            (later if touched else now).append(ticket)
        _done(now)
        self._applied(result)
        if later:
            self.big_runs.then(lambda: _done(later))

    def _applied(self, result: Processed) -> None:
        metrics.EVENTS_APPLIED.inc(result.applied)
        self._decided(result.decided, result.claimed)

    def _decided(self, decided: DecideResult, claimed: list[ClaimedRestart]) -> None:
        """After the commit: hand on the restarts claimed as they were queued, wake the
        background for the rest, pass big failed runs on to be decided."""
        if claimed:
            self.hand(claimed)
        if decided.queued > len(claimed) or decided.deferred:
            self.on_queued(decided.deferred > 0)
        if decided.big:
            self.big_runs.submit(decided.big)

    def _apply(self, execution_ids: set[str]) -> None:
        """Apply what is pending for these executions (read back from the database)."""
        if not execution_ids:
            return
        try:
            result = self._process_in_one(execution_ids, None)
        except Exception:  # noqa: BLE001  (retried one by one below, each failure logged)
            log.warning("applying %d executions failed; one by one now", len(execution_ids))
            result = self._one_by_one(execution_ids, None)
        self._applied(result)

    def _one_by_one(
        self,
        execution_ids: set[str],
        parsed: dict[str, ExecutionDocument | StatusEvent] | None,
    ) -> Processed:
        result = Processed()
        for execution_id in sorted(execution_ids):
            try:
                one = self._process_in_one({execution_id}, parsed)
            except Exception:
                log.exception("applying the deliveries of %s failed", execution_id)
                self._count_attempt(execution_id)
                continue
            result.applied += one.applied
            result.claimed += one.claimed
            result.decided.queued += one.decided.queued
            result.decided.deferred += one.decided.deferred
            result.decided.big += one.decided.big
        return result

    def _process_in_one(
        self,
        execution_ids: set[str],
        parsed: dict[str, ExecutionDocument | StatusEvent] | None,
    ) -> Processed:
        with transaction(self.sessions) as session:
            return self._run(session, execution_ids, parsed)

    def _count_attempt(self, execution_id: str) -> None:
        try:
            with transaction(self.sessions) as session:
                count_attempt(session, [execution_id])
        except SQLAlchemyError:
            log.exception("could not count a failed attempt for %s", execution_id)

    def _sweep(self) -> None:
        """Deliveries a crash or a failed batch left pending, big failed runs left undecided,
        and orphaned spool files."""
        try:
            if self.replay_orphans():
                log.info("stored the spool files of a process that is gone")
            with transaction(self.sessions) as session:
                before = utcnow() - LEFTOVER_AGE
                leftovers = pending_executions(session, 100, before)
                undecided = undecided_big_runs(session, before)
        except SQLAlchemyError:
            return  # the database is still away; the spool keeps what arrives
        except Exception:
            log.exception("looking for leftovers failed")
            return
        self.big_runs.submit(undecided)
        if leftovers:
            log.info("applying deliveries left pending for %d executions", len(leftovers))
            self._apply(set(leftovers))


def _deliveries(tickets: list[Ticket]) -> list[Delivery]:
    return [d for ticket in tickets for d in ticket.deliveries]


def _parsed(tickets: list[Ticket]) -> dict[str, ExecutionDocument | StatusEvent]:
    """The new deliveries' items by delivery key (duplicates were applied before)."""
    return {d.delivery_key: d.item for ticket in tickets for d in ticket.fresh()}


def _execution_ids(tickets: list[Ticket]) -> set[str]:
    return {d.item.execution_id for ticket in tickets for d in ticket.fresh()}


def _share(tickets: list[Ticket], new: list[bool]) -> None:
    """Hand each ticket its slice of a batch's new/duplicate flags."""
    start = 0
    for ticket in tickets:
        end = start + len(ticket.deliveries)
        ticket.new = new[start:end]
        start = end


def _done(tickets: list[Ticket]) -> None:
    done = time.monotonic()
    for ticket in tickets:
        ticket.processed.set()
        metrics.PROCESSING_LAG.observe(done - ticket.arrived)


def _fail(tickets: list[Ticket]) -> None:
    for ticket in tickets:
        ticket.failed = True
        ticket.durable.set()
        ticket.processed.set()


def _by_time(records: list[Spooled]) -> Iterable[tuple[dt.datetime, list[Delivery]]]:
    group: list[Delivery] = []
    at: dt.datetime | None = None
    for record in records:
        if at is not None and record.received_at != at:
            yield at, group
            group = []
        at = record.received_at
        group.append(record.delivery)
    if at is not None:
        yield at, group
