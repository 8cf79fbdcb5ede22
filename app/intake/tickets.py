"""A callback's deliveries on their way through the intake (`app.intake.intake`): the ticket
that carries them from the callback's thread to the writer and the processor, and how those
threads take tickets from their queues."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from app.core.deliveries import Delivery

MAX_BATCH = 1000
"""Deliveries stored (or replayed from the spool) in one transaction at most."""


@dataclass
class Ticket:
    """One callback's deliveries on their way through the intake."""

    deliveries: list[Delivery]
    new: list[bool] = field(default_factory=list)
    spooled: bool = False
    failed: bool = False
    durable: threading.Event = field(default_factory=threading.Event)
    processed: threading.Event = field(default_factory=threading.Event)
    arrived: float = field(default_factory=time.monotonic)

    @property
    def accepted(self) -> int:
        return sum(self.new)

    @property
    def duplicates(self) -> int:
        return len(self.deliveries) - self.accepted

    def fresh(self) -> Iterable[Delivery]:
        return (d for d, new in zip(self.deliveries, self.new, strict=True) if new)


@dataclass
class Answer:
    accepted: int
    duplicates: int
    spooled: bool


class Backlog:
    """How many stored deliveries wait for the processor; the writer waits on it."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self.size = 0
        self._batches = 0  # batches the processor has finished
        self._stalled_at = -1  # `_batches` when a wait last ran out

    def stored(self, count: int) -> None:
        with self._changed:
            self.size += count

    def applied(self, count: int) -> None:
        """The processor finished a batch (applied, or given up on) of `count` of them."""
        with self._changed:
            self.size -= count
            self._batches += 1
            self._changed.notify_all()

    def wait_below(self, limit: int, timeout: float) -> bool:
        """Until fewer than `limit` wait, or `timeout` seconds; whether they do. A processor
        that finished no batch since a wait last ran out is not waited for again until it
        does: it has stalled, and every wait would only add `timeout` to callbacks' answers
        (the writer stores at its own pace meanwhile)."""
        with self._changed:
            if self._batches == self._stalled_at:
                return self.size < limit
            if self._changed.wait_for(lambda: self.size < limit, timeout):
                return True
            self._stalled_at = self._batches
            return False


def take(
    source: queue.SimpleQueue[Ticket | None], wait: float, limit: int = MAX_BATCH
) -> tuple[list[Ticket], bool]:
    """What is waiting (up to `limit` deliveries, or one ticket that has more), after up to
    `wait` seconds for the first; and whether the stop marker came."""
    try:
        first = source.get(timeout=wait)
    except queue.Empty:
        return [], False
    if first is None:
        return [], True
    tickets = [first]
    return tickets, take_more(source, tickets, limit)


def take_more(source: queue.SimpleQueue[Ticket | None], tickets: list[Ticket], limit: int) -> bool:
    """Add to `tickets` what waits in `source` now, while they hold fewer than `limit`
    deliveries; whether the stop marker came (the caller's loop then ends after this batch)."""
    size = sum(len(t.deliveries) for t in tickets)
    while size < limit:
        try:
            more = source.get_nowait()
        except queue.Empty:
            return False
        if more is None:
            return True
        tickets.append(more)
        size += len(more.deliveries)
    return False
