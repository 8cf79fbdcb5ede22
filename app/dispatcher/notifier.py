"""The notifier loop: look at the watched states now and then, claim due notifications,
deliver each on its channel, record the answer; repeat (docs/policy.md, "Notifications")."""

from __future__ import annotations

import logging
import threading
import time

import requests
from sqlalchemy.exc import SQLAlchemyError

from app.core.notifications import claim_due_notifications, record_notification
from app.core.watch import watch
from app.db import utcnow
from app.dispatcher.dispatcher import worker_name
from app.notify import Links, send_notification
from app.runtime import Runtime

log = logging.getLogger(__name__)

WATCH_SECONDS = 15.0
"""How often breakers and quarantines are looked at for changes to tell."""
LEASE_SECONDS = 60.0
BATCH = 20


class Notifier:
    def __init__(self, runtime: Runtime, name: str | None = None) -> None:
        self.runtime = runtime
        self.name = name or worker_name()
        self.links = Links(runtime.settings.public_url)
        self.http = requests.Session()
        self._wake = threading.Event()
        self._next_watch = 0.0

    def wake(self) -> None:
        self._wake.set()

    def watch(self) -> int:
        policy = self.runtime.current_policy().policy
        if not policy.notify.enabled or time.monotonic() < self._next_watch:
            return 0
        self._next_watch = time.monotonic() + WATCH_SECONDS
        with self.runtime.transaction() as session:
            return watch(session, policy, utcnow())

    def run_once(self) -> int:
        """Send what is due; how many notifications were tried."""
        self.runtime.tell_policy_refusal()
        self.watch()
        tried = 0
        while True:
            with self.runtime.transaction() as session:
                claims = claim_due_notifications(session, self.name, utcnow(), LEASE_SECONDS, BATCH)
            if not claims:
                return tried
            config = self.runtime.current_policy().policy.notify
            for claimed in claims:
                # No transaction is open while the receiver is called.
                result = send_notification(config, claimed, self.links, self.http)
                with self.runtime.transaction() as session:
                    state = record_notification(session, claimed, self.name, result, utcnow())
                log.info(
                    "notification %s (%s) on %s: %s",
                    claimed.id,
                    claimed.kind,
                    claimed.channel,
                    state,
                )
                tried += 1

    def run_forever(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.run_once()
            except SQLAlchemyError:
                log.exception("notifier: database error; retrying shortly")
            except Exception:
                log.exception("notifier: unexpected error; retrying shortly")
            self._wake.wait(self.runtime.settings.dispatch_interval)
            self._wake.clear()
        self.http.close()
