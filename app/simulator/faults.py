"""Fault injection at runtime: errors, latency, hangs, and holds on restart calls."""

from __future__ import annotations

import random
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from app.simulator.config import Faults


@dataclass(frozen=True)
class RequestFault:
    """What to do to one API request: wait `delay` seconds, then maybe answer `status`."""

    delay: float = 0.0
    hang: bool = False
    status: int | None = None


@dataclass
class HeldCall:
    number: int
    execution_id: str
    stage: str  # "before": not applied yet; "after": applied, answer held
    since: float
    action: str | None = None


class FaultInjector:
    """The current switches, the seeded draws, and the restart calls being held."""

    def __init__(self, faults: Faults, rng: random.Random, hold_timeout: float) -> None:
        self._lock = threading.Condition()
        self._faults = faults
        self._rng = rng
        self._hold_timeout = hold_timeout
        self._held: dict[int, HeldCall] = {}
        self._numbers = 0
        self._holds_started = 0
        self._closed = threading.Event()
        self.injected = {"errors": 0, "hangs": 0, "delays": 0, "holds": 0}

    @property
    def faults(self) -> Faults:
        with self._lock:
            return self._faults

    def update(self, changes: Mapping[str, Any]) -> Faults:
        with self._lock:
            self._faults = self._faults.updated(changes)
            if "hold_restart" in changes or "hold_count" in changes:
                self._holds_started = 0
            return self._faults

    def replace(self, faults: Faults) -> None:
        with self._lock:
            self._faults = faults
            self._holds_started = 0

    # -- request faults ------------------------------------------------------------------

    def for_request(self, method: str, path: str) -> RequestFault:
        """Draw the faults for one API request (in arrival order, from the seeded generator)."""
        with self._lock:
            f = self._faults
            if f.match and not re.search(f.match, f"{method} {path}"):
                return RequestFault()
            delay = f.latency_ms / 1000.0
            hang = False
            if f.hang_next > 0:
                self._faults = f = f.updated({"hang_next": f.hang_next - 1})
                hang = True
            elif f.hang_rate and self._rng.random() < f.hang_rate:
                hang = True
            status = None
            if f.fail_next > 0:
                self._faults = f = f.updated({"fail_next": f.fail_next - 1})
                status = f.error_status
            elif f.error_rate and self._rng.random() < f.error_rate:
                status = f.error_status
            if hang:
                delay += f.hang_seconds
                self.injected["hangs"] += 1
            elif delay:
                self.injected["delays"] += 1
            if status is not None:
                self.injected["errors"] += 1
            return RequestFault(delay, hang, status)

    def sleep(self, seconds: float) -> bool:
        """Wait (cut short when the simulator closes); False when it closed meanwhile."""
        return not self._closed.wait(seconds) if seconds > 0 else not self._closed.is_set()

    # -- holds on restart ----------------------------------------------------------------

    def hold_stage(self) -> str | None:
        """The stage at which this restart call is to be held, counting it against hold_count."""
        with self._lock:
            f = self._faults
            if f.hold_restart is None:
                return None
            if f.hold_count is not None and self._holds_started >= f.hold_count:
                return None
            self._holds_started += 1
            return f.hold_restart

    def hold(self, execution_id: str, stage: str) -> str:
        """Block until released; "proceed" or "fail" (closing or a hold timeout fail it)."""
        with self._lock:
            self._numbers += 1
            call = HeldCall(self._numbers, execution_id, stage, time.time())
            self._held[call.number] = call
            self.injected["holds"] += 1
            self._lock.notify_all()
            deadline = time.monotonic() + self._hold_timeout
            while call.action is None and not self._closed.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._lock.wait(min(remaining, 0.5))
            del self._held[call.number]
            self._lock.notify_all()
            return call.action or "fail"

    def release(
        self, execution_id: str | None = None, action: str = "proceed", stage: str | None = None
    ) -> int:
        if action not in ("proceed", "fail"):
            raise ValueError("action must be 'proceed' or 'fail'")
        with self._lock:
            released = 0
            for call in self._held.values():
                if call.action is not None:
                    continue
                if execution_id is not None and call.execution_id != execution_id:
                    continue
                if stage is not None and call.stage != stage:
                    continue
                call.action = action
                released += 1
            self._lock.notify_all()
            return released

    def held(self) -> list[dict[str, Any]]:
        with self._lock:
            return [
                {
                    "number": c.number,
                    "execution_id": c.execution_id,
                    "stage": c.stage,
                    "since": c.since,
                }
                for c in self._held.values()
                if c.action is None
            ]

    def wait_held(self, count: int = 1, timeout: float = 5.0) -> bool:
        """Wait until at least `count` restart calls are being held."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while sum(1 for c in self._held.values() if c.action is None) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._lock.wait(remaining)
            return True

    def reset(self, faults: Faults) -> None:
        self.release(action="fail")
        with self._lock:
            self._faults = faults
            self._holds_started = 0
            for key in self.injected:
                self.injected[key] = 0

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            self._lock.notify_all()
