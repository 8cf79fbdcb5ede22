"""Builders of Runner feed payloads for tests."""

from __future__ import annotations

import datetime as dt
from typing import Any

EXECUTION_ID = "44fdcfa2-6a7f-46d3-9f71-22e629e2358a"
JOB_ID = "1111505e-6773-494a-b2bf-d2cc2684710d"
ACCOUNT = "XXXX"


def event(
    event_type: str,
    timestamp: int,
    host: str | None = None,
    *,
    event_id: str | None = None,
    execution_id: str = EXECUTION_ID,
    job_id: str = JOB_ID,
    account: str = ACCOUNT,
    **message: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = dict(message)
    if host is not None:
        body["host"] = host
    return {
        "id": event_id or f"{execution_id[:8]}-{event_type}-{host}-{timestamp}",
        "timestamp": timestamp,
        "account_alias": account,
        "job_id": job_id,
        "execution_id": execution_id,
        "event_type": event_type,
        "message": body,
        "notifications": [],
    }


def failing_run_events(
    start_ms: int,
    failing: tuple[str, ...] = ("web2", "web3"),
    prefix: str = "a",
    execution_id: str = EXECUTION_ID,
    job_id: str = JOB_ID,
    account: str = ACCOUNT,
) -> list[dict[str, Any]]:
    """A run on web1..web3 where `failing` hosts fail (web3 unreachable, others a task)."""
    t = start_ms
    common: dict[str, Any] = {"execution_id": execution_id, "job_id": job_id, "account": account}
    events = [
        event("playbook_on_start", t, event_id=f"{prefix}1", **common),
        event(
            "playbook_on_task_start", t + 100, event_id=f"{prefix}2", task="restart nginx", **common
        ),
        event("runner_on_ok", t + 200, "web1", event_id=f"{prefix}3", changed=False, **common),
    ]
    stats: dict[str, dict[str, int]] = {
        "web1": {"ok": 3, "changed": 0, "unreachable": 0, "failures": 0, "skipped": 0}
    }
    for n, host in enumerate(failing):
        if host == "web3":
            events.append(
                event(
                    "runner_on_unreachable",
                    t + 300 + n,
                    host,
                    event_id=f"{prefix}u{n}",
                    msg="Failed to connect to the host via ssh: Connection refused",
                    unreachable=True,
                    **common,
                )
            )
            stats[host] = {"ok": 0, "changed": 0, "unreachable": 1, "failures": 0, "skipped": 0}
        else:
            events.append(
                event(
                    "runner_on_failed",
                    t + 300 + n,
                    host,
                    event_id=f"{prefix}f{n}",
                    msg="non-zero return code",
                    rc=2,
                    changed=False,
                    stderr="psql: could not connect to server: Connection timed out",
                    task="migrate",
                    **common,
                )
            )
            stats[host] = {"ok": 1, "changed": 0, "unreachable": 0, "failures": 1, "skipped": 0}
    status = "FAILURE" if failing else "SUCCESS"
    events.append(event("playbook_on_stats", t + 900, event_id=f"{prefix}8", **common))
    events.append(
        event(
            "playbook_result", t + 1000, event_id=f"{prefix}9", status=status, stats=stats, **common
        )
    )
    return events


GIT_ERROR = (
    "fatal: unable to access 'https://git{n}.example.com/ops/site-{n}.git/': Failed to connect "
    "to git{n}.example.com port 443 after {ms} ms: Connection refused"
)
"""A git checkout failing the same way everywhere, its host and numbers varying."""

SIGNATURE_POLICY = """
version: 1
defaults: {backoff: {initial: 30s, jitter: 0}, max_restarts: 3, deadline: 2h}
limits: {per_job: null, per_account: null, global: null, per_host: null}
circuit_breaker:
  failure_ratio: 0.5
  min_restarts: 1000
  per_signature: {executions: 5, jobs: 3, window: 10m, cool_down: 15m}
"""
"""Restarts after 30 s, no budgets; five executions of three jobs with one signature open
its breaker."""


def ms(moment: dt.datetime) -> int:
    return int(moment.timestamp() * 1000)


def run_events(
    execution_id: str,
    job_id: str,
    at: dt.datetime,
    failed: dict[str, str],
    ok: tuple[str, ...] = (),
    *,
    prefix: str | None = None,
) -> list[dict[str, Any]]:
    """One run: `ok` hosts succeed, each host in `failed` fails with its stderr. Event ids
    start with `prefix` (default the execution id; give another for a later run)."""
    t = ms(at) - 5_000
    common: dict[str, Any] = {"execution_id": execution_id, "job_id": job_id, "account": "XXXX"}
    prefix = execution_id if prefix is None else prefix
    items = [event("playbook_on_start", t, event_id=f"{prefix}-s", **common)]
    stats: dict[str, dict[str, int]] = {}
    for n, host in enumerate(ok):
        items.append(event("runner_on_ok", t + 10 + n, host, event_id=f"{prefix}-o{n}", **common))
        stats[host] = {"ok": 1, "changed": 0, "unreachable": 0, "failures": 0, "skipped": 0}
    for n, (host, stderr) in enumerate(failed.items()):
        items.append(
            event(
                "runner_on_failed",
                t + 100 + n,
                host,
                event_id=f"{prefix}-f{n}",
                msg="non-zero return code",
                rc=128,
                stderr=stderr,
                task="checkout",
                **common,
            )
        )
        stats[host] = {"ok": 0, "changed": 0, "unreachable": 0, "failures": 1, "skipped": 0}
    items.append(event("playbook_on_stats", t + 900, event_id=f"{prefix}-t", stats=stats, **common))
    items.append(
        event(
            "playbook_result",
            t + 1000,
            event_id=f"{prefix}-r",
            status="FAILURE",
            stats=stats,
            **common,
        )
    )
    return items
