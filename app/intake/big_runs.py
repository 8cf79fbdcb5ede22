"""The intake's third thread: failed runs naming thousands of hosts, decided in two steps.

The writer and the processor leave such a run undecided in the transaction that applied it
(`app.core.big_runs`) and hand it here. This thread reads its decision's inputs in a
read-only transaction, which holds no lock, then decides and stores it in a short write
transaction: on SQLite the write lock, which every callback waits for, is held for the
document and the decision's few statements, not for everything the decision reads.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterable

from sqlalchemy.orm import Session, sessionmaker

from app.core.big_runs import decide_prepared, prepare
from app.core.claims import ClaimedRestart, claim_when_queued, claimed_when_queued
from app.core.decisions import DecideResult
from app.db import read_only, transaction, utcnow
from app.policy import Policy
from app.threads import start_thread

log = logging.getLogger(__name__)


class BigRuns:
    """One thread, started with the first big run, that decides them one at a time."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        policy: Callable[[], Policy],
        defer_unknown_jobs: bool,
        claim_for: Callable[[], tuple[str, float] | None],
        decided: Callable[[DecideResult, list[ClaimedRestart]], None],
    ) -> None:
        """`claim_for` and `decided` as the intake's own: the lease under which a restart
        queued due now is claimed at once, and what to do once a decision is committed."""
        self.sessions = sessions
        self.policy = policy
        self.defer_unknown_jobs = defer_unknown_jobs
        self.claim_for = claim_for
        self.decided = decided
        self._queue: queue.SimpleQueue[str | Callable[[], None] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, execution_ids: Iterable[str]) -> None:
        for execution_id in execution_ids:
            self._start()
            self._queue.put(execution_id)

    def then(self, done: Callable[[], None]) -> None:
        """Call `done` once what was submitted so far is decided (or failed)."""
        self._start()
        self._queue.put(done)

    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = start_thread("respawn-intake-big-runs", self._loop)

    def close(self, timeout: float) -> None:
        """Decide what was handed over, then stop."""
        with self._lock:
            thread = self._thread
        if thread is not None:
            self._queue.put(None)
            thread.join(timeout)

    def _loop(self) -> None:
        while (item := self._queue.get()) is not None:
            try:
                if callable(item):
                    item()
                else:
                    self.decide(item)
            except Exception:
                # A run left undecided: the intake's sweep hands it over again.
                log.exception("the intake's big-run thread failed on %r", item)

    def decide(self, execution_id: str) -> DecideResult:
        """Both steps for one execution (nothing when it needs no decision)."""
        policy = self.policy()
        now = utcnow()
        with transaction(self.sessions) as session:
            prepared = prepare(
                read_only(session), policy, execution_id, now, self.defer_unknown_jobs
            )
        if prepared is None:
            return DecideResult()
        with transaction(self.sessions) as session:
            lease = self.claim_for()
            if lease is not None:
                claim_when_queued(session, *lease)
            result = decide_prepared(session, policy, prepared, now, self.defer_unknown_jobs)
            claimed = claimed_when_queued(session)
        self.decided(result, claimed)
        return result
