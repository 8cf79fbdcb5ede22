"""The live status feed: each event POSTed to the job's callback URLs, fire-and-forget.

One worker thread sends, in order, with short timeouts and no retry. Drops, duplicates and
reordering are decided when an event is queued, from the seeded generator, so a seed
reproduces them. Only loopback targets are reached unless remote callbacks are allowed.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests

from app.simulator.config import Faults

log = logging.getLogger(__name__)

FAILURE_EVENTS = frozenset({"runner_on_failed", "runner_on_unreachable", "runner_on_async_failed"})
FAILED_RESULTS = frozenset({"FAILURE", "INIT_FAILURE"})
REORDER_WAIT = 0.25  # a held-back event goes out after this long even if no other comes
LOG_LIMIT = 5000


@dataclass(frozen=True)
class Callback:
    url: str
    level: str = "DEBUG"


def parse_callbacks(value: Any) -> list[Callback]:
    """`[{"url", "level"}]` or the 2015 form, a plain array of URL strings."""
    found: list[Callback] = []
    if not isinstance(value, list):
        return found
    for item in value:
        if isinstance(item, str) and item:
            found.append(Callback(item))
        elif isinstance(item, Mapping) and isinstance(item.get("url"), str):
            found.append(Callback(item["url"], str(item.get("level") or "DEBUG").upper()))
    return found


def wants(level: str, event: Mapping[str, Any]) -> bool:
    """Level filter: DEBUG every event, ERROR failure events (and a failed result), RESULT
    only `playbook_result`."""
    event_type = event.get("event_type")
    if level == "RESULT":
        return event_type == "playbook_result"
    if level == "ERROR":
        if event_type == "playbook_result":
            message = event.get("message")
            return isinstance(message, Mapping) and message.get("status") in FAILED_RESULTS
        return event_type in FAILURE_EVENTS
    return True


def is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def masked(url: str) -> str:
    """The URL without its path beyond the first segment: callback URLs carry tokens."""
    parts = urlsplit(url)
    first = parts.path.strip("/").split("/", 1)[0]
    rest = "/…" if parts.path.strip("/").count("/") or parts.query else ""
    return f"{parts.scheme}://{parts.netloc}/{first}{rest}"


@dataclass
class _Item:
    url: str
    event: dict[str, Any]
    duplicate: bool = False
    reordered: bool = False


class CallbackSender:
    """Queues events per callback URL and sends them from one worker thread."""

    def __init__(
        self,
        faults: Callable[[], Faults],
        rng: random.Random,
        timeout: tuple[float, float],
        allow_remote: bool,
    ) -> None:
        self._faults = faults
        self._rng = rng
        self._timeout = timeout
        self._allow_remote = allow_remote
        self._cond = threading.Condition()
        self._queue: deque[_Item] = deque()
        self._held: dict[str, tuple[float, _Item]] = {}
        self._log: deque[dict[str, Any]] = deque(maxlen=LOG_LIMIT)
        self._counts = {"queued": 0, "sent": 0, "failed": 0, "dropped": 0, "refused": 0}
        self._sending = 0
        self._thread: threading.Thread | None = None
        self._closed = False
        self._session = requests.Session()

    def submit(self, event: dict[str, Any], callbacks: Sequence[Callback]) -> None:
        with self._cond:
            if self._closed:
                return
            faults = self._faults()
            for callback in callbacks:
                if not wants(callback.level, event):
                    continue
                self._counts["queued"] += 1
                item = _Item(callback.url, event)
                if self._rng.random() < faults.drop_callbacks:
                    self._record(item, "dropped", None)
                    continue
                items = [item]
                if self._rng.random() < faults.duplicate_callbacks:
                    items.append(_Item(callback.url, event, duplicate=True))
                held = self._held.pop(callback.url, None)
                if held is not None:
                    items.append(held[1])  # the held-back event goes after this one
                elif self._rng.random() < faults.reorder_callbacks:
                    item.reordered = True
                    self._held[callback.url] = (time.monotonic(), item)
                    items.remove(item)
                self._queue.extend(items)
            self._ensure_thread()
            self._cond.notify_all()

    def _ensure_thread(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="sim-callbacks", daemon=True)
            self._thread.start()

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._flush_held(force=False)
                    if self._queue:
                        break
                    self._cond.wait(0.05 if self._held else None)
                if self._closed:
                    return
                item = self._queue.popleft()
                self._sending += 1
            try:
                self._send(item)
            finally:
                with self._cond:
                    self._sending -= 1
                    self._cond.notify_all()

    def _flush_held(self, force: bool) -> None:
        now = time.monotonic()
        for url, (since, item) in list(self._held.items()):
            if force or now - since >= REORDER_WAIT:
                del self._held[url]
                self._queue.append(item)

    def _send(self, item: _Item) -> None:
        if not self._allow_remote and not is_loopback(item.url):
            with self._cond:
                self._record(item, "refused", None)
            log.warning("not sending a callback to non-loopback %s", masked(item.url))
            return
        status: int | None = None
        outcome = "failed"
        try:
            response = self._session.post(
                item.url,
                data=json.dumps(item.event),
                headers={"Content-Type": "application/json", "User-Agent": "runner-simulator"},
                timeout=self._timeout,
                allow_redirects=False,
            )
            status = response.status_code
            response.close()
            outcome = "sent"
        except requests.RequestException as exc:
            log.info("callback to %s failed: %s", masked(item.url), type(exc).__name__)
        with self._cond:
            self._record(item, outcome, status)

    def _record(self, item: _Item, outcome: str, status: int | None) -> None:
        self._counts[outcome] += 1
        self._log.append(
            {
                "event_id": item.event.get("id"),
                "event_type": item.event.get("event_type"),
                "execution_id": item.event.get("execution_id"),
                "target": masked(item.url),
                "outcome": outcome,
                "status": status,
                "duplicate": item.duplicate,
                "reordered": item.reordered,
            }
        )

    @property
    def pending(self) -> int:
        with self._cond:
            return len(self._queue) + len(self._held) + self._sending

    def wait_idle(self, timeout: float) -> bool:
        """Wait until every queued event was sent (or dropped); held-back ones included."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._queue or self._held or self._sending:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(min(remaining, 0.05))
                self._flush_held(force=False)
            return True

    def deliveries(self) -> dict[str, Any]:
        with self._cond:
            return {
                "counts": dict(self._counts),
                "pending": len(self._queue) + len(self._held) + self._sending,
                "log": list(self._log),
            }

    def clear(self) -> None:
        with self._cond:
            self._queue.clear()
            self._held.clear()
            self._log.clear()
            for key in self._counts:
                self._counts[key] = 0

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._queue.clear()
            self._held.clear()
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout=5)
        self._session.close()
