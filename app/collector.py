"""The garbage collector of a web worker, kept out of the way of callbacks and restarts.

Python collects reference cycles whenever enough objects have been allocated: in a busy
worker that is every few milliseconds, in the middle of whatever runs, and a full collection
walks everything the worker has loaded. In the latency benchmark (`docs/BENCHMARKS.md`,
"Failure to restart") the collector made most of the p99 from a failure to its restart. So a
worker, once it is ready:

- freezes what it has loaded (`gc.freeze()`: the app, its models and mappers, the policy
  live as long as the worker, and no collection walks them again);
- turns automatic collection off and collects on a clock instead, from a thread of its own:
  the young generations every `YOUNG_SECONDS`, everything once a minute.

Memory stays bounded: cyclic garbage (the ORM's sessions and states, mostly) lives at most
`YOUNG_SECONDS`. Under a sustained load that is about 26,000 objects a second per worker:
collected once a second, they made pauses of up to 25 ms; every tenth of a second, the
pauses are a tenth as long, for the same work (the latency benchmark's p99 back to back on
SQLite: 25-26 ms against 22.7 ms).
"""

from __future__ import annotations

import gc
import time

from app.threads import start_thread

YOUNG_SECONDS = 0.1
"""How often the young generations (0 and 1) are collected."""
FULL_EVERY = 600
"""Every how many rounds the collection is a full one (once a minute)."""


class PacedCollector:
    """Collects cycles on a clock rather than at allocation counts."""

    def __init__(self, young_seconds: float = YOUNG_SECONDS, full_every: int = FULL_EVERY) -> None:
        self.young_seconds = young_seconds
        self.full_every = full_every
        self.rounds = 0

    def start(self) -> None:
        """Freeze what is loaded, stop automatic collection, collect from now on."""
        gc.freeze()
        gc.disable()
        start_thread("respawn-gc", self._run)

    def collect(self) -> int:
        """One round: the young generations, or everything every `full_every` rounds; how
        many unreachable objects were found."""
        self.rounds += 1
        return gc.collect(2 if self.rounds % self.full_every == 0 else 1)

    def _run(self) -> None:
        while True:
            time.sleep(self.young_seconds)
            self.collect()
