"""The restart call is not made when too little of the lease is left to finish it."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from app.core.outbox import ClaimedRestart, send_restart
from app.runner.documents import ExecutionDocument, Timer

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


class StubClient:
    def __init__(self) -> None:
        self.restarts = 0

    def ensure_token(self) -> None:
        pass

    def lookup_execution(self, *_args: Any) -> ExecutionDocument:
        return ExecutionDocument(
            "e1", "j1", "A", "FAILURE", (Timer(1, 2),), ("web1",), None, False, None
        )

    def restart(self, *_args: Any, **_kwargs: Any) -> ExecutionDocument:
        self.restarts += 1
        return ExecutionDocument("e1", "j1", "A", "PENDING", (Timer(1, 2),), (), None, False, None)


def claim(lease_left: float) -> ClaimedRestart:
    return ClaimedRestart(
        restart_id=1,
        attempt_id=1,
        execution_id="e1",
        account="A",
        job_id="j1",
        run_index=0,
        hosts=("web1",),
        timers_before=1,
        attempt=1,
        lease_expires_at=NOW + dt.timedelta(seconds=lease_left),
    )


def test_sends_with_enough_lease_left() -> None:
    client = StubClient()

    result = send_restart(client, claim(30), None, 13.0, clock=lambda: NOW)  # type: ignore[arg-type]

    assert (result.state, result.outcome, client.restarts) == ("done", "restarted", 1)


def test_does_not_send_when_the_lease_is_nearly_over() -> None:
    client = StubClient()

    result = send_restart(client, claim(10), None, 13.0, clock=lambda: NOW)  # type: ignore[arg-type]

    assert (result.state, result.outcome, client.restarts) == ("retry", "lease_expiring", 0)


def test_an_unusable_key_map_is_retried_later_and_nothing_is_sent(tmp_path: Path) -> None:
    client = StubClient()
    missing = tmp_path / "keys.yaml"

    result = send_restart(client, claim(30), str(missing), 13.0, clock=lambda: NOW)  # type: ignore[arg-type]

    assert (result.state, result.outcome, client.restarts) == ("retry", "key_error", 0)
    assert "SSH key map" in result.detail and str(missing) in result.detail
