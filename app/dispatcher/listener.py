"""Wake-ups from other processes: a restart queued anywhere wakes this process's dispatchers.

A process wakes its own dispatchers when it queues a restart; the others would find it only
at their next look (`RESPAWN_DISPATCH_INTERVAL`, 2 s), so when one web worker takes all the
callbacks (one kept-alive connection from a proxy, or a Runner), it alone would carry the
restarts. On PostgreSQL the transaction that queues a due restart also sends a `NOTIFY`
(`app.db.announce_restart`, delivered on commit); the `Listener` of each process holds a
connection that `LISTEN`s and wakes its dispatchers at each one from another process. SQLite
has no such channel (and one writer): there the dispatchers look at their own pace.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import psycopg
from sqlalchemy.engine import Engine

from app.db import RESTARTS_CHANNEL, process_token

log = logging.getLogger(__name__)

RECONNECT_SECONDS = 2.0
"""How long to wait before listening again after the connection was lost."""
POLL_SECONDS = 1.0
"""How often the listening thread looks up from its connection to see whether to stop."""


class Listener:
    """Calls `on_notice` whenever another process announces a restart that is due."""

    def __init__(
        self, engine: Engine, on_notice: Callable[[], None], own: str | None = None
    ) -> None:
        """`own`: the payload of this process's announcements (`app.db.process_token`),
        passed over: the process woke its dispatchers itself, and a second wake-up only
        had another of them race the first for the claim."""
        self.engine = engine
        self.on_notice = on_notice
        self.own = own
        self.listening = threading.Event()
        """Set while the connection listens (tests wait for it)."""

    def run_forever(self, stop: threading.Event) -> None:
        lost = False
        while not stop.is_set():
            try:
                self._listen(stop, lost)
            except psycopg.Error as exc:
                # Once per outage (a connection that listened, then failed, is a new one).
                new_loss = self.listening.is_set() or not lost
                (log.warning if new_loss else log.debug)(
                    "restart announcements: not listening (%s); trying again every %g s",
                    type(exc).__name__,
                    RECONNECT_SECONDS,
                )
                lost = True
            else:
                lost = False
            finally:
                self.listening.clear()
            stop.wait(RECONNECT_SECONDS)

    def _listen(self, stop: threading.Event, after_loss: bool) -> None:
        args, params = self.engine.dialect.create_connect_args(self.engine.url)
        with psycopg.connect(*args, **params, autocommit=True) as connection:
            connection.execute(f"LISTEN {RESTARTS_CHANNEL}")
            self.listening.set()
            if after_loss:
                log.info("restart announcements: listening again")
            while not stop.is_set():
                # Any number of announcements that arrived together is one wake-up.
                own = self.own or process_token()
                notices = connection.notifies(timeout=POLL_SECONDS, stop_after=1)
                if any(notice.payload != own for notice in notices):
                    self.on_notice()
