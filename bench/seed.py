"""Bulk-seed a migrated database with a realistic history, fast (SQLAlchemy Core, chunked).

The spread: executions over the last 30 days for 6 accounts of uneven size and ~N/200 jobs,
each job on 2-6 hosts out of a fleet of ~N/50. About 18% of first runs fail (by default); the policy
restarts 70% of those, a restarted run fails again 40% of the time, up to 3 restarts.
Every failed run has its host failures and a decision; every restart decision its outbox
row (done, with its result) and an attempt. Events: a start and a result per run and one
per failed host (the real feed sends ~20 per run; the event table only matters to the
detail page, through its (execution_pk, id) index).
"""

from __future__ import annotations

import datetime as dt
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Table, insert, text
from sqlalchemy.engine import Connection

from app.db import make_engine
from app.models import (
    Decision,
    Event,
    Execution,
    ExecutionRun,
    HostFailure,
    Job,
    Restart,
    RestartAttempt,
)

ACCOUNTS = (("ACME", 40), ("BETA", 25), ("CORP", 15), ("DEVX", 10), ("EDGE", 6), ("FLUX", 4))
TIERS = ("web", "app", "db", "cache", "queue", "edge")
CHUNK = 5000
FAILURE_TEXT = {
    "task_failed": (
        "non-zero return code",
        "E: Unable to fetch some archives: 503 Service Unavailable",
    ),
    "unreachable": (
        "Failed to connect to the host via ssh: "
        "connect to host {host} port 22: Connection timed out",
        None,
    ),
}
RULES = (("defaults", "restart"), ("flaky-network", "restart"), ("mirror-outage", "restart"))
SKIPS = (
    ("no-db-migrations", "rule_skip"),
    ("defaults", "budget_per_job"),
    ("defaults", "quarantine"),
)


@dataclass
class Seeded:
    """What the read benchmark needs to know about the seeded data."""

    executions: int
    rows: dict[str, int] = field(default_factory=dict)
    restarted_execution: str = ""
    busy_host: str = ""
    job: str = ""
    account: str = ""
    deep_position: tuple[dt.datetime, int] | None = None


def _uid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


class _Batch:
    """Rows per table, written out in chunks in foreign-key order."""

    ORDER = (Job, Execution, ExecutionRun, HostFailure, Decision, Restart, RestartAttempt, Event)

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.rows: dict[Any, list[dict[str, Any]]] = {model: [] for model in self.ORDER}
        self.counts: dict[str, int] = {model.__tablename__: 0 for model in self.ORDER}

    def add(self, model: Any, row: dict[str, Any]) -> None:
        """Add a row; an execution is added after its children, so a chunk ends there."""
        self.rows[model].append(row)
        if model is Execution and len(self.rows[Execution]) >= CHUNK:
            self.flush()

    def flush(self) -> None:
        for model in self.ORDER:
            rows = self.rows[model]
            if rows:
                table: Table = model.__table__
                self.connection.execute(insert(table), rows)
                self.counts[model.__tablename__] += len(rows)
                rows.clear()


def _spread(rng: random.Random, executions: int) -> Iterator[tuple[int, dt.datetime]]:
    """Ids in arrival order over the last 30 days."""
    now = dt.datetime.now(dt.UTC)
    start = now - dt.timedelta(days=30)
    step = dt.timedelta(days=30) / max(executions, 1)
    for n in range(executions):
        yield n + 1, start + step * n + dt.timedelta(seconds=rng.uniform(0, 30))


def seed(url: str, executions: int, seed_value: int = 1, fail_share: float = 0.18) -> Seeded:
    """Seed `executions` executions; `fail_share` of the first runs (that end) fail."""
    rng = random.Random(seed_value)
    info = Seeded(executions)
    accounts = [name for name, weight in ACCOUNTS for _ in range(weight)]
    fleet = [f"{rng.choice(TIERS)}{n:04d}" for n in range(max(40, executions // 50))]
    jobs: list[tuple[str, str, list[str]]] = []
    engine = make_engine(url)
    ids = {"run": 0, "failure": 0, "decision": 0, "restart": 0, "attempt": 0, "event": 0}
    host_failures: dict[str, int] = {}
    most_restarts = -1
    order: list[tuple[dt.datetime, int]] = []

    def next_id(kind: str) -> int:
        ids[kind] += 1
        return ids[kind]

    try:
        with engine.begin() as connection:
            batch = _Batch(connection)
            for _ in range(max(20, executions // 200)):
                account = rng.choice(accounts)
                job_id = _uid(rng)
                hosts = rng.sample(fleet, rng.randint(2, 6))
                jobs.append((account, job_id, hosts))
                batch.add(
                    Job,
                    {
                        "job_id": job_id,
                        "account_alias": account,
                        "description": f"deploy {hosts[0][:-4]} tier {job_id[:4]}",
                        "fetched_at": dt.datetime.now(dt.UTC),
                    },
                )
            for pk, started in _spread(rng, executions):
                account, job_id, hosts = rng.choice(jobs)
                execution_id = _uid(rng)
                age = dt.datetime.now(dt.UTC) - started
                runs = _runs(rng, age < dt.timedelta(hours=1), fail_share)
                at = started
                failed_hosts: list[str] = []
                first_failure = None
                for index, (status, restart_after) in enumerate(runs):
                    run_start = at + dt.timedelta(seconds=rng.uniform(1, 20))
                    run_end = run_start + dt.timedelta(seconds=rng.uniform(30, 900))
                    final = status not in ("RUNNING", "PENDING", "INITIALIZING")
                    batch.add(
                        ExecutionRun,
                        {
                            "id": next_id("run"),
                            "execution_pk": pk,
                            "run_index": index,
                            "status": status,
                            "start_ms": int(run_start.timestamp() * 1000),
                            "end_ms": int(run_end.timestamp() * 1000) if final else None,
                            "started_at": run_start,
                            "ended_at": run_end if final else None,
                            "start_derived": False,
                            "end_derived": False,
                        },
                    )
                    _events(
                        batch,
                        next_id,
                        pk,
                        execution_id,
                        index,
                        run_start,
                        run_end if final else None,
                        status,
                    )
                    failed_hosts = []
                    if status in ("FAILURE", "INIT_FAILURE"):
                        first_failure = first_failure or run_end
                        failed_hosts = _failures(
                            batch, next_id, rng, pk, execution_id, index, hosts, run_end, status
                        )
                        for host in failed_hosts:
                            host_failures[host] = host_failures.get(host, 0) + 1
                        _decision(
                            batch, next_id, rng, pk, index, failed_hosts, run_end, restart_after
                        )
                    at = run_end + dt.timedelta(seconds=rng.uniform(30, 600))
                last_status = runs[-1][0]
                last_seen = at
                batch.add(
                    Execution,
                    {
                        "id": pk,
                        "execution_id": execution_id,
                        "account_alias": account,
                        "job_id": job_id,
                        "status": last_status,
                        "run_index": len(runs) - 1,
                        "status_rank": _RANK[last_status],
                        "run_count": len(runs),
                        "failed_hosts": failed_hosts,
                        "repository_log": None,
                        "is_vpn_established": False,
                        "first_seen_at": started,
                        "last_seen_at": last_seen,
                        "last_event_at": last_seen,
                        "first_failure_at": first_failure,
                        "restart_count": len(runs) - 1,
                    },
                )
                order.append((last_seen, pk))
                if len(runs) - 1 > most_restarts:
                    most_restarts = len(runs) - 1
                    info.restarted_execution = execution_id
                if not info.job and pk > executions // 2:
                    info.job, info.account = job_id, account
            batch.flush()
            if connection.dialect.name == "postgresql":
                for table in ("execution_runs", "host_failures", "decisions", "restarts",
                              "restart_attempts", "events", "executions"):  # fmt: skip
                    connection.execute(
                        text(
                            f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                            f"(SELECT coalesce(max(id), 1) FROM {table}))"
                        )
                    )
        if engine.dialect.name == "postgresql":
            with engine.connect() as connection:
                connection.execution_options(isolation_level="AUTOCOMMIT").execute(text("ANALYZE"))
        info.rows = batch.counts
    finally:
        engine.dispose()
    # A host in the middle of the failure counts: its filter is neither trivial nor empty.
    by_count = sorted(host_failures.items(), key=lambda item: item[1])
    info.busy_host = by_count[len(by_count) // 2][0] if by_count else fleet[0]
    order.sort(reverse=True)
    info.deep_position = order[int(len(order) * 0.9)]
    return info


_RANK = {
    "PENDING": 0, "INITIALIZING": 1, "RUNNING": 2, "STOPPING": 3, "KILLING": 3,
    "SUCCESS": 4, "FAILURE": 4, "INIT_FAILURE": 4, "STOPPED": 4, "KILLED": 4,
}  # fmt: skip


def _runs(rng: random.Random, recent: bool, fail_share: float) -> list[tuple[str, bool]]:
    """The statuses of an execution's runs, each with whether a restart followed."""
    if recent and rng.random() < 0.5:
        return [(rng.choice(("PENDING", "INITIALIZING", "RUNNING", "RUNNING")), False)]
    runs: list[tuple[str, bool]] = []
    if rng.random() < 0.03 * (1 - fail_share):
        return [(rng.choice(("STOPPED", "KILLED")), False)]
    failed = rng.random() < fail_share
    while True:
        if not failed:
            runs.append(("SUCCESS", False))
            return runs
        status = "INIT_FAILURE" if rng.random() < 0.1 else "FAILURE"
        restart = len(runs) < 3 and rng.random() < 0.7
        runs.append((status, restart))
        if not restart:
            return runs
        failed = rng.random() < 0.4


def _events(
    batch: _Batch,
    next_id: Any,
    pk: int,
    execution_id: str,
    run_index: int,
    start: dt.datetime,
    end: dt.datetime | None,
    status: str,
) -> None:
    moments = [("playbook_on_start", start, {"playbook": "site.yml"})]
    if end is not None:
        moments.append(("playbook_result", end, {"status": status, "stats": {}}))
    for event_type, at, message in moments:
        event_id = next_id("event")
        batch.add(
            Event,
            {
                "id": event_id,
                "execution_id": execution_id,
                "execution_pk": pk,
                "run_index": run_index,
                "pending": False,
                "delivery_key": f"{pk:08x}{event_id:016x}",
                "kind": "event",
                "event_type": event_type,
                "event_id": f"ev-{event_id}",
                "event_ms": int(at.timestamp() * 1000),
                "event_at": at,
                "received_at": at,
                "payload": {"event_type": event_type, "message": message},
            },
        )


def _failures(
    batch: _Batch,
    next_id: Any,
    rng: random.Random,
    pk: int,
    execution_id: str,
    run_index: int,
    hosts: list[str],
    at: dt.datetime,
    status: str,
) -> list[str]:
    if status == "INIT_FAILURE":
        return []
    failed = rng.sample(hosts, 1 if rng.random() < 0.8 else min(2, len(hosts)))
    for host in failed:
        failure_class = "unreachable" if rng.random() < 0.35 else "task_failed"
        message, stderr = FAILURE_TEXT[failure_class]
        batch.add(
            HostFailure,
            {
                "id": next_id("failure"),
                "execution_pk": pk,
                "run_index": run_index,
                "host": host,
                "failure_class": failure_class,
                "message": message.format(host=host),
                "stderr_tail": stderr,
                "rc": 2 if failure_class == "task_failed" else None,
                "changed": 0,
                "occurred_at": at,
            },
        )
        event_id = next_id("event")
        batch.add(
            Event,
            {
                "id": event_id,
                "execution_id": execution_id,
                "execution_pk": pk,
                "run_index": run_index,
                "pending": False,
                "delivery_key": f"{pk:08x}{event_id:016x}",
                "kind": "event",
                "event_type": "runner_on_failed",
                "event_id": f"ev-{event_id}",
                "host": host,
                "event_ms": int(at.timestamp() * 1000),
                "event_at": at,
                "received_at": at,
                "payload": {"event_type": "runner_on_failed", "message": {"host": host}},
            },
        )
    return failed


def _decision(
    batch: _Batch,
    next_id: Any,
    rng: random.Random,
    pk: int,
    run_index: int,
    hosts: list[str],
    at: dt.datetime,
    restart: bool,
) -> None:
    decision_id = next_id("decision")
    rule, code = rng.choice(RULES) if restart else rng.choice(SKIPS)
    due = at + dt.timedelta(seconds=30 * 2**run_index)
    batch.add(
        Decision,
        {
            "id": decision_id,
            "execution_pk": pk,
            "run_index": run_index,
            "decision_key": f"auto:{pk}:{run_index}",
            "origin": "policy",
            "action": "restart" if restart else "skip",
            "hosts": hosts if restart else [],
            "excluded_hosts": [],
            "due_at": due if restart else None,
            "backoff_seconds": float(30 * 2**run_index) if restart else None,
            "rule": rule,
            "reason_code": "restart" if restart else code,
            "reason": f"{'restart' if restart else 'skip'} by {rule}",
            "policy_version": "bench0000000",
            "created_at": at,
        },
    )
    if not restart:
        return
    restart_id = next_id("restart")
    sent = due + dt.timedelta(seconds=rng.uniform(0.05, 2))
    batch.add(
        Restart,
        {
            "id": restart_id,
            "decision_id": decision_id,
            "execution_pk": pk,
            "run_index": run_index,
            "manual": False,
            "counts_against_budget": True,
            "state": "done",
            "hosts": hosts,
            "due_at": due,
            "attempts": 1,
            "timers_before": run_index + 1,
            "outcome": "restarted",
            "outcome_detail": "execution is PENDING",
            "result": "succeeded" if rng.random() < 0.6 else "failed_again",
            "result_at": sent + dt.timedelta(minutes=5),
            "sent_at": sent,
            "created_at": at,
            "updated_at": sent,
            "completed_at": sent,
        },
    )
    batch.add(
        RestartAttempt,
        {
            "id": next_id("attempt"),
            "restart_id": restart_id,
            "worker": "bench:1",
            "started_at": due,
            "finished_at": sent,
            "status_code": 200,
            "outcome": "restarted",
            "detail": "execution is PENDING",
        },
    )
