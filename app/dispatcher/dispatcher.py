"""The dispatcher loop: claim one due restart, call the Runner, record the answer; repeat."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator

from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from app.core.claims import ClaimedRestart
from app.core.outbox import RetryPolicy, claim_due_restarts, record_result, send_restart
from app.core.signatures import any_held, release_held
from app.db import utcnow
from app.runner.client import RunnerClient
from app.runtime import Runtime

log = logging.getLogger(__name__)

RELEASE_SECONDS = 1.0
"""How often a dispatcher looks for held restarts to let go (not at every wake-up: each look
is a transaction, and wake-ups come with every restart queued)."""


def worker_name() -> str:
    return f"{socket.gethostname()[:32]}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Dispatcher:
    """Claims due restarts one at a time and carries each out."""

    def __init__(self, runtime: Runtime, client: RunnerClient, name: str | None = None) -> None:
        self.runtime = runtime
        self.client = client
        self.name = name or worker_name()
        self.settings = runtime.settings
        self.retry = RetryPolicy(
            self.settings.max_send_attempts,
            self.settings.retry_base_seconds,
            self.settings.uncertain_retry_seconds,
        )
        self._wake = threading.Event()
        self._next_release = 0.0
        self.idle = False
        """Waiting for a wake-up or its next look (not inside a pass)."""
        self.take_handed: Callable[[], ClaimedRestart | None] = lambda: None
        """The next restart claimed where it was queued, for this process's dispatchers."""
        self.on_claimed: Callable[[], None] | None = None
        """Called once a restart is claimed while another is due too, before the Runner is:
        an idle dispatcher can take the next one meanwhile. (Waking one for nothing had it
        claim in vain, a transaction beside the call, on SQLite a turn at the write lock.)"""

    def wake(self) -> None:
        self._wake.set()

    def release(self) -> int:
        """Let go the held restarts whose error signature's breaker has closed."""
        with self.runtime.reading() as session:
            if not any_held(session):
                return 0
        try:
            with self.runtime.transaction() as session:
                done = release_held(session, self.runtime.current_policy().policy, utcnow())
        except IntegrityError:
            # Another dispatcher released the same restart first (its release decision's
            # key is taken): nothing to do here.
            return 0
        return done.released + done.dropped

    def run_once(self) -> int:
        """Carry out the restarts claimed where they were queued; release what may go (once
        a `RELEASE_SECONDS`); then claim and carry out due restarts until none is due.
        Return how many restarts were sent."""
        handled = 0
        for claim in self._handed():
            self._carry_out(claim)
            handled += 1
        if time.monotonic() >= self._next_release:
            self._next_release = time.monotonic() + RELEASE_SECONDS
            self.release()
        while True:
            with self.runtime.transaction() as session:
                claims = claim_due_restarts(
                    session, self.name, utcnow(), self.settings.lease_seconds, 1
                )
            if not claims:
                return handled
            if claims.more and self.on_claimed is not None:
                self.on_claimed()
            for claim in claims:
                self._carry_out(claim)
                handled += 1

    def _handed(self) -> Iterator[ClaimedRestart]:
        """The restarts handed to this process's dispatchers, until none is left."""
        while (claim := self.take_handed()) is not None:
            yield claim

    def _carry_out(self, claim: ClaimedRestart) -> None:
        """Call the Runner (no transaction is open meanwhile), then record its answer."""
        result = send_restart(
            self.client,
            claim,
            self.settings.ssh_keys_file,
            self.settings.runner_call_seconds,
        )
        with self.runtime.transaction() as session:
            state = record_result(
                session,
                claim,
                claim.worker or self.name,
                result,
                utcnow(),
                self.retry,
                self.runtime.current_policy().policy,
            )
        log.info(
            "restart id %s of %s: %s (%s)",
            claim.restart_id,
            claim.execution_id,
            result.outcome,
            state,
            extra={
                "execution_id": claim.execution_id,
                "job_id": claim.job_id,
                "account": claim.account,
            },
        )

    def run_forever(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.run_once()
            except SQLAlchemyError:
                log.exception("dispatcher: database error; retrying shortly")
            except Exception:
                log.exception("dispatcher: unexpected error; retrying shortly")
            self.idle = True
            self._wake.wait(self.settings.dispatch_interval)
            self.idle = False
            self._wake.clear()
        # Stopping: what was handed to this process is claimed in its name already; carry it
        # out rather than leave it to wait for its lease to run out.
        for claim in self._handed():
            try:
                self._carry_out(claim)
            except Exception:
                log.exception("dispatcher: a handed restart failed on the way out")
