"""The background of one process: dispatcher, reconciler and job-refresh threads.

`start_background` is the one place they start, for each entry point that wants them: every
`respawn serve` web worker (RESPAWN_DISPATCHER=embedded, from the gunicorn config), `respawn
worker` and `respawn demo`.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable

from app.core.claims import ClaimedRestart
from app.dispatcher.dispatcher import Dispatcher, worker_name
from app.dispatcher.listener import Listener
from app.dispatcher.notifier import Notifier
from app.dispatcher.reconciler import JOB_REFRESH_INTERVAL, Reconciler, refresh_jobs_forever
from app.runner.client import RunnerClient
from app.runner.factory import make_runner_client
from app.runtime import Runtime
from app.threads import start_thread

log = logging.getLogger(__name__)


class Background:
    """The dispatcher, reconciler and job-refresh threads of one process."""

    def __init__(
        self,
        runtime: Runtime,
        client: RunnerClient | None,
        dispatchers: int = 1,
        reconcile: bool = True,
    ) -> None:
        self.stop_event = threading.Event()
        self.runtime = runtime
        self.notifier = Notifier(runtime)
        # Without a Runner client nothing can be sent or reconciled: notifications still go.
        self.dispatchers = (
            [Dispatcher(runtime, client) for _ in range(dispatchers)] if client else []
        )
        # Restarts claimed where they were queued, for any dispatcher of this process, under
        # one lease holder's name (app/core/claims.py).
        self.handed: deque[ClaimedRestart] = deque()
        self.claimer = worker_name()
        for dispatcher in self.dispatchers:
            dispatcher.on_claimed = self._pass_on
            dispatcher.take_handed = self._take_handed
        self.reconciler = Reconciler(runtime, client) if reconcile and client else None
        if self.reconciler is not None:
            self.reconciler.on_queued = self.wake_dispatchers
        self.refresh_wake = threading.Event()
        # Restarts other processes queue (PostgreSQL only; app/dispatcher/listener.py).
        self.listener = (
            Listener(runtime.engine, self.wake_dispatchers)
            if self.dispatchers and runtime.engine.dialect.name == "postgresql"
            else None
        )
        self.threads: list[threading.Thread] = []

    def wake(self, fetch_jobs: bool = True) -> None:
        """Have the dispatchers look now; with `fetch_jobs`, the job refresh too. The intake
        asks for the refresh only when a failure waits for its job's record: otherwise it
        fetched nothing and decided nothing, at the cost of transactions beside every
        restart (on SQLite, turns at the write lock), and its own pace finds new jobs."""
        if fetch_jobs:
            self.refresh_wake.set()
        self.wake_dispatchers()

    def wake_dispatchers(self) -> None:
        """New work was queued: one idle dispatcher looks now, and each one that claims a
        restart while another is due wakes the next (`_pass_on`), so as many look as there is
        work.

        Waking them all for each restart had every one start a claim transaction, all but
        one in vain, for the CPU and (on SQLite) the write lock the processor and the
        dispatcher with the claim needed. When none is idle, all are woken: a busy one
        claims again before it sleeps, but one may be just past its last claim.
        """
        self._wake_one()
        self._wake_notifier()

    def _wake_one(self) -> bool:
        """Wake one idle dispatcher, or all of them when none is idle (then False)."""
        if self._wake_idle_dispatcher():
            return True
        for dispatcher in self.dispatchers:
            dispatcher.wake()
        return False

    def _wake_notifier(self) -> None:
        if self.runtime.current_policy().policy.notify.enabled:
            # Otherwise nothing was queued for it: a transaction saved per restart.
            self.notifier.wake()

    def claim_for(self) -> tuple[str, float] | None:
        """The lease under which a restart may be claimed as it is queued: while one of the
        dispatchers waits for work, which the hand-off then wakes."""
        if not any(dispatcher.idle for dispatcher in self.dispatchers):
            return None
        return self.claimer, self.runtime.settings.lease_seconds

    def hand(self, claims: list[ClaimedRestart]) -> None:
        """Restarts claimed as they were queued: an idle dispatcher is woken for each (all,
        when none is idle), and takes them before it claims anything."""
        self.handed.extend(claims)
        for _ in claims:
            if not self._wake_one():
                break
        self._wake_notifier()

    def _take_handed(self) -> ClaimedRestart | None:
        try:
            return self.handed.popleft()
        except IndexError:
            return None

    def _pass_on(self) -> None:
        """A dispatcher claimed a restart: another may be due behind it."""
        self._wake_idle_dispatcher()

    def _wake_idle_dispatcher(self) -> bool:
        """Wake one idle dispatcher; False when none is idle."""
        for dispatcher in self.dispatchers:
            if dispatcher.idle:
                dispatcher.idle = False  # the next call wakes another one
                dispatcher.wake()
                return True
        return False

    def start(self) -> None:
        for n, dispatcher in enumerate(self.dispatchers):
            self._spawn(f"respawn-dispatcher-{n}", dispatcher.run_forever)
        self._spawn("respawn-notifier", self.notifier.run_forever)
        if self.listener is not None:
            self._spawn("respawn-listener", self.listener.run_forever)
        if self.reconciler is not None:
            reconciler = self.reconciler
            self._spawn("respawn-reconciler", reconciler.run_forever)
            self._spawn(
                "respawn-job-refresh",
                lambda stop: refresh_jobs_forever(
                    reconciler, stop, self.refresh_wake, JOB_REFRESH_INTERVAL
                ),
            )

    def _spawn(self, name: str, target: Callable[[threading.Event], None]) -> None:
        self.threads.append(start_thread(name, target, self.stop_event))

    def stop(self, timeout: float = 15.0) -> None:
        self.stop_event.set()
        self.wake()
        self.notifier.wake()
        for thread in self.threads:
            thread.join(timeout)


def start_background(runtime: Runtime, dispatchers: int = 1, reconcile: bool = True) -> Background:
    """Start this process's dispatcher (and reconciler) threads, if a Runner is configured,
    and its notifier in any case."""
    client = make_runner_client(runtime.settings, on_note=runtime.note)
    if client is None:
        log.warning(
            "no Runner credentials (RESPAWN_RUNNER_TOKEN or USERNAME/PASSWORD): "
            "restarts are decided and queued but not sent"
        )
    background = Background(runtime, client, dispatchers, reconcile)
    runtime.attach_background(
        background.wake, background.stop, background.claim_for, background.hand
    )
    background.start()
    return background
