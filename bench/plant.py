"""A history with planted restart patterns, for `policy suggest`'s tests and benchmark.

Each `Pattern` is one error signature whose restarts succeed with known odds: by attempt, and
for first restarts by the wait before they were sent. The executions that fail with it are
written straight into a migrated database (SQLAlchemy Core, chunked) the way respawn records
them: runs, host failures, a decision per failed run (with its signature), a sent restart per
restart decision with its result, and the next run. Then the insight counters are rebuilt.
Executions that succeed at once can be added as bulk (they cost the counters nothing).

The history is made under `PLANT_POLICY`: two restarts at most, 30 s then 60 s apart.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, insert, select, text
from sqlalchemy.engine import Connection

from app.core.insights import rebuild
from app.db import make_engine, make_sessionmaker, transaction
from app.models import (
    Decision,
    Execution,
    ExecutionRun,
    FailureSignature,
    HostFailure,
    Restart,
)
from app.policy import HostFailure as PolicyHostFailure
from app.policy import failure_signature

PLANT_POLICY = """version: 1
defaults:
  max_restarts: 2
  backoff: {initial: 30s, factor: 2, max: 10m, jitter: 0}
  deadline: null
limits: {per_job: null, per_account: null, global: null, per_host: null}
circuit_breaker: null
"""
MAX_RESTARTS = 2
RUN_SECONDS = 300
CHUNK = 2000
QUICK_WAITS = (30,)


@dataclass(frozen=True)
class Pattern:
    name: str
    failure_class: str
    message: str
    """With `{n}`: a number that varies (the signature stays the same)."""
    executions: int
    expect: str | None
    """The suggestion it should get: skip, max_restarts, backoff, or none."""
    first: float
    """Odds that a quick first restart succeeds."""
    later: float
    """Odds that a second restart succeeds."""
    late: float | None = None
    """Odds that a first restart sent after `LATE_WAIT` or more succeeds (default: `first`)."""
    waits: tuple[int, ...] = QUICK_WAITS
    """Waits (seconds) before first restarts, drawn evenly."""


LATE_WAIT = 1800
WORDS = (
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india",
    "juliet", "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo",
    "sierra", "tango", "uniform", "victor", "whiskey", "xray", "yankee", "zulu",
)  # fmt: skip
"""Names that vary a message's text (numbers would be masked into one signature)."""
LONG_WAITS = (30, 120, 600, 2700, 5400)


def planted_patterns(scale: int = 1) -> list[Pattern]:
    """The three planted patterns, a healthy signature and noise below ten samples."""
    n = 40 * scale
    return [
        Pattern("never", "unreachable",
                "Failed to connect to db{n}.example.com port 5432: Connection refused",
                n, "skip", first=0.0, later=0.0),
        Pattern("second-try", "task_failed",
                "Could not get lock held by process {n}; try again", n, "max_restarts",
                first=0.03, later=0.9),
        Pattern("long-wait", "task_failed",
                "artifact store answered 503 for build {n}", n * 2, "backoff",
                first=0.03, later=0.05, late=0.9, waits=LONG_WAITS),
        Pattern("healthy", "unreachable",
                "ssh: connect to host web{n}.example.com port 22: Connection timed out",
                n * 2, None, first=0.95, later=0.95),
        *(
            Pattern(f"noise-{k}", "task_failed", f"noise case {WORDS[k]}: exit code {{n}}", 3, None,
                    first=0.0, later=0.0)
            for k in range(4)
        ),
    ]  # fmt: skip


def bench_patterns(rng: random.Random, scale: float = 1.0) -> list[Pattern]:
    """Many signatures with odds drawn at random around each kind, for precision and recall:
    about 1,950 failing executions times `scale`."""
    found: list[Pattern] = []
    for k in range(4):
        n, w = max(1, round(rng.randint(30, 60) * scale)), WORDS[k]
        found += [
            Pattern(f"never-{k}", "unreachable", f"host group {w} unreachable: refused port {{n}}",
                    n, "skip", first=rng.uniform(0, 0.04), later=rng.uniform(0, 0.04)),
            Pattern(f"second-try-{k}", "task_failed", f"lock {w} held by pid {{n}}", n,
                    "max_restarts", first=rng.uniform(0, 0.1), later=rng.uniform(0.7, 0.95)),
            Pattern(f"long-wait-{k}", "task_failed", f"mirror {w} answered 503 for {{n}}", n * 2,
                    "backoff", first=rng.uniform(0, 0.1), later=rng.uniform(0, 0.1),
                    late=rng.uniform(0.7, 0.95), waits=LONG_WAITS),
        ]  # fmt: skip
    # Harder cases: rarely helped (a skip is right), slowly helped on the second try (a higher
    # max_restarts is right), and a coin toss at every attempt and wait (no change is right).
    for k in range(4):
        n, w = max(1, round(rng.randint(30, 60) * scale)), WORDS[10 + k]
        found += [
            Pattern(f"rarely-{k}", "unreachable", f"vpn {w} tunnel down: refused port {{n}}",
                    n, "skip", first=rng.uniform(0.05, 0.12), later=rng.uniform(0.05, 0.12)),
            Pattern(f"slow-second-{k}", "task_failed", f"queue {w} busy, job {{n}} waits", n,
                    "max_restarts", first=rng.uniform(0.15, 0.3), later=rng.uniform(0.55, 0.75)),
            Pattern(f"coin-{k}", "task_failed", f"flaky test {w} failed in run {{n}}", n, None,
                    first=(odds := rng.uniform(0.35, 0.6)), later=odds, late=odds,
                    waits=LONG_WAITS),
        ]  # fmt: skip
    for k in range(12):
        w = WORDS[k]
        odds = rng.uniform(0.8, 0.98)
        found.append(
            Pattern(f"healthy-{k}", "task_failed", f"transient error {w} in step {{n}}",
                    max(1, round(rng.randint(30, 80) * scale)), None, first=odds, later=odds)
        )  # fmt: skip
    for k in range(20):
        w = f"{WORDS[k % 26]}-{WORDS[-1 - k % 26]}"
        found.append(
            Pattern(f"noise-{k}", "task_failed", f"rare failure {w} code {{n}}",
                    rng.randint(1, 3), None, first=rng.uniform(0, 1), later=rng.uniform(0, 1))
        )  # fmt: skip
    return found


@dataclass
class Planted:
    keys: dict[str, str]
    """Pattern name to signature key."""
    expected: dict[str, str | None]
    """Signature key to the suggestion it should get."""
    executions: int
    decisions: int


class _Rows:
    ORDER = (FailureSignature, Execution, ExecutionRun, HostFailure, Decision, Restart)

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.rows: dict[Any, list[dict[str, Any]]] = {model: [] for model in self.ORDER}
        # Ids go on from what is stored: a history can be planted over another one.
        self.ids: dict[Any, int] = {
            model: connection.scalar(select(func.coalesce(func.max(model.id), 0))) or 0
            for model in self.ORDER[1:]
        }
        self.ids[FailureSignature] = 0
        self.known = set(connection.scalars(select(FailureSignature.key)))

    def add(self, model: Any, row: dict[str, Any]) -> int:
        if model is FailureSignature:
            if row["key"] in self.known:
                return 0
            self.known.add(row["key"])
        self.ids[model] += 1
        if model is not FailureSignature:
            row = {"id": self.ids[model], **row}
        self.rows[model].append(row)
        return self.ids[model]

    def maybe_flush(self) -> None:
        """Between executions only: an execution's rows are still changed while it is made."""
        if sum(len(r) for r in self.rows.values()) >= CHUNK:
            self.flush()

    def flush(self) -> None:
        for model in self.ORDER:
            if self.rows[model]:
                self.connection.execute(insert(model), self.rows[model])
                self.rows[model] = []


def plant(
    url: str,
    patterns: Sequence[Pattern],
    *,
    now: dt.datetime | None = None,
    days: int = 20,
    successes: int = 0,
    seed: int = 1,
) -> Planted:
    """Write the patterns' failures (and `successes` executions that just succeeded) over the
    `days` before `now`, then rebuild the insight counters."""
    rng = random.Random(seed)
    now = now or dt.datetime.now(dt.UTC)
    start = now - dt.timedelta(days=days)
    fleet = [f"node{n:03d}" for n in range(200)]
    jobs = [f"job-{n:02d}" for n in range(40)]
    keys: dict[str, str] = {}
    expected: dict[str, str | None] = {}
    engine = make_engine(url)
    try:
        with engine.begin() as connection:
            rows = _Rows(connection)
            first = (rows.ids[Execution], rows.ids[Decision])
            for pattern in patterns:
                found = failure_signature(
                    (PolicyHostFailure("h", pattern.failure_class, pattern.message.format(n=1)),)
                )
                assert found is not None
                keys[pattern.name], expected[found.key] = found.key, pattern.expect
                rows.add(
                    FailureSignature,
                    {
                        "key": found.key,
                        "failure_class": found.failure_class,
                        "text": found.text,
                        "first_seen_at": start,
                        "last_seen_at": now,
                        "closed_at": None,
                        "closed_by": None,
                    },
                )
                pattern_jobs = rng.sample(jobs, 4)
                for _ in range(pattern.executions):
                    began = start + dt.timedelta(seconds=rng.uniform(0, days * 86400 - 30000))
                    hosts = sorted(rng.sample(fleet, rng.randint(1, 2)))
                    job = rng.choice(pattern_jobs)
                    _failing_execution(rows, rng, pattern, found.key, job, hosts, began)
                    rows.maybe_flush()
            for _ in range(successes):
                began = start + dt.timedelta(seconds=rng.uniform(0, days * 86400))
                pk = rows.add(
                    Execution, _execution(rng, rng.choice(jobs), "SUCCESS", 0, began, None)
                )
                rows.add(ExecutionRun, _run(pk, 0, "SUCCESS", began))
                rows.maybe_flush()
            rows.flush()
            if connection.dialect.name == "postgresql":
                for model in _Rows.ORDER[1:]:
                    table = model.__tablename__
                    connection.execute(
                        text(
                            f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                            f"(SELECT coalesce(max(id), 1) FROM {table}))"
                        )
                    )
        with transaction(make_sessionmaker(engine)) as session:
            rebuild(session)
        if engine.dialect.name == "postgresql":
            # Written in bulk, faster than autovacuum notices: give the planner the statistics
            # it would have in a database that grew to this size.
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
                connection.execute(text("ANALYZE"))
    finally:
        engine.dispose()
    return Planted(keys, expected, rows.ids[Execution] - first[0], rows.ids[Decision] - first[1])


def _execution(
    rng: random.Random,
    job: str,
    status: str,
    run: int,
    began: dt.datetime,
    first_failure: dt.datetime | None,
) -> dict[str, Any]:
    return {
        "execution_id": f"{job}-{rng.getrandbits(64):016x}",
        "account_alias": "ACME",
        "job_id": job,
        "status": status,
        "status_rank": 4,
        "run_index": run,
        "run_count": run + 1,
        "failed_hosts": [],
        "first_seen_at": began,
        "last_seen_at": began,
        "first_failure_at": first_failure,
        "restart_count": run,
    }


def _run(pk: int, index: int, status: str, ended: dt.datetime | None) -> dict[str, Any]:
    return {
        "execution_pk": pk,
        "run_index": index,
        "status": status,
        "started_at": ended - dt.timedelta(seconds=RUN_SECONDS) if ended else None,
        "ended_at": ended,
        "start_derived": False,
        "end_derived": False,
    }


def _failing_execution(
    rows: _Rows,
    rng: random.Random,
    pattern: Pattern,
    key: str,
    job: str,
    hosts: list[str],
    began: dt.datetime,
) -> None:
    ended = began + dt.timedelta(seconds=RUN_SECONDS)
    execution = _execution(rng, job, "FAILURE", 0, began, ended)
    pk = rows.add(Execution, execution)
    run, at, status = 0, ended, "FAILURE"
    while True:
        rows.add(ExecutionRun, _run(pk, run, status, at))
        for host in hosts:
            rows.add(
                HostFailure,
                {
                    "execution_pk": pk,
                    "run_index": run,
                    "host": host,
                    "failure_class": pattern.failure_class,
                    "message": pattern.message.format(n=rng.randint(1, 99999)),
                    "occurred_at": at,
                },
            )
        restart = run < MAX_RESTARTS
        wait = rng.choice(pattern.waits) if run == 0 else 60
        decision = _decision(pk, run, hosts, at, wait, key, restart)
        decision_id = rows.add(Decision, decision)
        if not restart:
            break
        sent = at + dt.timedelta(seconds=wait)
        odds = pattern.later if run else pattern.first
        if run == 0 and pattern.late is not None and wait >= LATE_WAIT:
            odds = pattern.late
        unfinished = rng.random() < 0.02
        ok = rng.random() < odds
        at = sent + dt.timedelta(seconds=RUN_SECONDS)
        result = None if unfinished else ("succeeded" if ok else "failed_again")
        rows.add(Restart, _restart(decision_id, pk, run, hosts, sent, result, at))
        run += 1
        if unfinished or ok:
            rows.add(ExecutionRun, _run(pk, run, "RUNNING" if unfinished else "SUCCESS", at))
            status = "RUNNING" if unfinished else "SUCCESS"
            break
    execution.update(status=status, run_index=run, run_count=run + 1, restart_count=run)
    execution["status_rank"] = 2 if status == "RUNNING" else 4
    execution["last_seen_at"] = at


def _decision(
    pk: int,
    run: int,
    hosts: list[str],
    at: dt.datetime,
    wait: int,
    key: str,
    restart: bool,
) -> dict[str, Any]:
    return {
        "execution_pk": pk,
        "run_index": run,
        "decision_key": f"auto:{pk}:{run}",
        "origin": "policy",
        "action": "restart" if restart else "skip",
        "hosts": hosts if restart else [],
        "excluded_hosts": [],
        "due_at": at + dt.timedelta(seconds=wait) if restart else None,
        "backoff_seconds": float(wait) if restart else None,
        "rule": "defaults",
        "reason_code": "restart" if restart else "max_restarts",
        "reason": "restart by the defaults" if restart else "skip: max_restarts 2 reached",
        "policy_version": "planted",
        "created_at": at,
        "signature": key,
    }


def _restart(
    decision_id: int,
    pk: int,
    run: int,
    hosts: list[str],
    sent: dt.datetime,
    result: str | None,
    ended: dt.datetime,
) -> dict[str, Any]:
    return {
        "decision_id": decision_id,
        "execution_pk": pk,
        "run_index": run,
        "manual": False,
        "counts_against_budget": True,
        "state": "done",
        "hosts": hosts,
        "due_at": sent,
        "attempts": 1,
        "timers_before": run + 1,
        "outcome": "restarted",
        "result": result,
        "result_at": ended if result else None,
        "sent_at": sent,
        "created_at": sent,
        "updated_at": sent,
        "completed_at": sent,
    }
