"""What the simulated Runner keeps: jobs, executions with their runs, and call statistics."""

from __future__ import annotations

import threading
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from app.simulator.engine import RunHandle
from app.simulator.shapes import CALL_LOG_LIMIT, DEFAULT_EXECUTION_TTL


@dataclass
class SimJob:
    id: str
    account: str
    definition: dict[str, Any]
    created_ms: int
    updated_ms: int

    @property
    def host_ids(self) -> tuple[str, ...]:
        return tuple(h["id"] for h in self.definition.get("hosts") or ())

    def answer(self) -> dict[str, Any]:
        base = f"/jobs/{self.account}/{self.id}"
        return {
            **self.definition,
            "id": self.id,
            "accountAlias": self.account,
            "status": "ACTIVE",
            "createdTime": self.created_ms,
            "lastUpdatedTime": self.updated_ms,
            # The published form: a list of {ref, id, href, verbs} (docs/runner.md).
            "links": [
                {"ref": "self", "id": self.id, "href": base, "verbs": ["GET", "PUT", "DELETE"]},
                {
                    "ref": "executions",
                    "id": self.id,
                    "href": f"{base}/executions",
                    "verbs": ["GET"],
                },
                {"ref": "start", "id": self.id, "href": f"{base}/start", "verbs": ["POST"]},
            ],
        }


def execution_ttl(definition: dict[str, Any]) -> int:
    """The job's executionTtl in minutes; absent or null means the default, 180."""
    ttl = definition.get("executionTtl")
    return ttl if isinstance(ttl, int) and not isinstance(ttl, bool) else DEFAULT_EXECUTION_TTL


@dataclass
class SimExecution:
    id: str
    record_id: str
    job_id: str
    account: str
    created_seq: int
    queued_seq: int
    definition: dict[str, Any]  # the job as it was when this run was queued
    original_hosts: tuple[str, ...]
    next_hosts: tuple[str, ...]
    status: str = "PENDING"
    timers: list[dict[str, int | None]] = field(default_factory=list)
    failed_hosts: list[str] = field(default_factory=list)
    attempts: dict[str, int] = field(default_factory=dict)
    run_number: int = 0
    handle: RunHandle | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    repository_log: Any = None
    restarts: int = 0

    def document(self, shape: str = "timers") -> dict[str, Any]:
        doc: dict[str, Any] = {
            "execution_id": self.id,
            "job_id": self.job_id,
            "account_alias": self.account,
            "status": self.status,
            "timers": [dict(t) for t in self.timers],
            "failed_hosts": list(self.failed_hosts),
            "repository_log": self.repository_log,
            "is_vpn_established": False,
        }
        if shape == "legacy":
            last = self.timers[-1] if self.timers else {"start": None, "end": None}
            del doc["timers"]
            doc = {"start": last["start"], "end": last["end"], **doc, "id": self.record_id}
        return doc


class CallStats:
    """What respawn did to the simulator: restart calls per execution, requests per route."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.clear()

    def clear(self) -> None:
        with self._lock:
            self._requests: Counter[str] = Counter()
            self._restarts: dict[str, dict[str, int]] = {}
            self._log: deque[dict[str, Any]] = deque(maxlen=CALL_LOG_LIMIT)
            self._received = 0
            self._applied = 0

    def request(self, endpoint: str) -> None:
        with self._lock:
            self._requests[endpoint] += 1

    def restart_received(self, execution_id: str, at_ms: int) -> dict[str, Any]:
        with self._lock:
            self._received += 1
            counts = self._restarts.setdefault(execution_id, {"received": 0, "applied": 0})
            counts["received"] += 1
            entry: dict[str, Any] = {
                "number": self._received,
                "execution_id": execution_id,
                "at": at_ms,
                "status": None,
                "applied": False,
            }
            self._log.append(entry)
            return entry

    def note(self, entry: dict[str, Any], **values: Any) -> None:
        with self._lock:
            if values.get("applied") and not entry.get("applied"):
                self._applied += 1
                counts = self._restarts.setdefault(
                    entry["execution_id"], {"received": 0, "applied": 0}
                )
                counts["applied"] += 1
            entry.update(values)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "restart": {
                    "received": self._received,
                    "applied": self._applied,
                    "by_execution": {k: dict(v) for k, v in self._restarts.items()},
                    "log": [dict(e) for e in self._log],
                },
                "requests": dict(self._requests),
            }

    def restarts_of(self, execution_id: str) -> dict[str, int]:
        with self._lock:
            return dict(self._restarts.get(execution_id, {"received": 0, "applied": 0}))
