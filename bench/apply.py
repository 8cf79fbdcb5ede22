"""Applying stored callbacks: the CPU that `store` + `process` spend per event and per failure.

What the intake's writer does on SQLite for every batch, and its processor on PostgreSQL:
store the batch's deliveries pending, apply them to their executions and decide every run
that failed, in one transaction (`app.core.inbox`). Measured in-process, without requests,
as the calling thread's CPU time (`time.thread_time`: the database server's own work on
PostgreSQL is not in it), for batches of 1 to 50 events of the realistic feed (`bench/feed`)
under the project's policy.yaml, and for failed documents one per transaction, each with its
decision, its restart queued and claimed where decided (the latency benchmark's path).

Baseline, in the same rounds: the same events inserted as plain rows, one transaction per
batch, with SQLAlchemy Core (the naive receiver's storage floor).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from sqlalchemy import insert
from sqlalchemy.orm import Session, sessionmaker

from app.core.claims import claim_when_queued
from app.core.deliveries import Delivery, parse_deliveries
from app.core.ingest import ingest_and_decide
from app.db import make_engine, make_sessionmaker, transaction, utcnow
from app.policy import Policy, parse_policy
from bench import feed
from bench.baselines import NAIVE_EVENTS, create_naive_table
from bench.common import PROJECT, Context, table, times

NAME = "apply"
TITLE = "Applying stored callbacks: CPU per event and per failure (in-process)"
BATCHES = (1, 4, 16, 50)
POLICY = PROJECT / "policy.yaml"


def _cpu_per_item(work: Callable[..., int], *args: Any) -> float:
    """The thread's CPU seconds per item `work(*args)` says it handled."""
    started = time.thread_time()
    count = work(*args)
    return (time.thread_time() - started) / count


def _apply(
    sessions: sessionmaker[Session], policy: Policy, batches: Sequence[list[Delivery]]
) -> int:
    for batch in batches:
        with transaction(sessions) as session:
            ingest_and_decide(session, batch, utcnow(), policy, defer_unknown_jobs=False)
    return sum(len(batch) for batch in batches)


def _naive(sessions: sessionmaker[Session], bodies: Sequence[list[Any]]) -> int:
    for body in bodies:
        with transaction(sessions) as session:
            session.execute(insert(NAIVE_EVENTS), [{"payload": item} for item in body])
    return sum(len(body) for body in bodies)


def _failures(sessions: sessionmaker[Session], policy: Policy, documents: list[Any]) -> int:
    for document in documents:
        deliveries = parse_deliveries(document, None, 10)
        with transaction(sessions) as session:
            claim_when_queued(session, "bench-dispatcher", 60.0)
            ingest_and_decide(session, deliveries, utcnow(), policy, defer_unknown_jobs=False)
    return len(documents)


def _slices(items: list[Any], size: int) -> Iterator[list[Any]]:
    """Consecutive slices of `size` items, taken in turn: each round gets fresh events."""
    position = 0
    while True:
        yield items[position : position + size]
        position += size


def run(ctx: Context) -> None:
    rounds = ctx.size(5, 2)
    per_round = ctx.size(400, 100)
    failures_per_round = ctx.size(100, 20)
    policy = parse_policy(POLICY.read_text())
    rows: list[list[str]] = []
    for kind in ctx.databases.kinds:
        with ctx.databases.database(kind) as url:
            create_naive_table(url)
            engine = make_engine(url)
            sessions = make_sessionmaker(engine)
            runs = (rounds + 1) * (len(BATCHES) + 1) * per_round // 10 + 40  # ~20 events a run
            events = feed.flat(feed.feed(runs, 11, start_ms=int(time.time() * 1000) - 3_600_000))
            deliveries = [parse_deliveries(e, None, 10)[0] for e in events]
            stored = _slices(deliveries, per_round)
            naive = _slices(events, per_round)
            now_ms = int(time.time() * 1000)
            documents = [
                feed.failed_document(f"apply-{kind}-{n:05d}", "job-apply", ["web1"], now_ms)
                for n in range((rounds + 1) * failures_per_round)
            ]
            failing = _slices(documents, failures_per_round)
            results: dict[str, list[float]] = {}
            for round_ in range(rounds + 1):  # the first round warms up, uncounted
                for size in BATCHES:
                    ours = feed.chunks(next(stored), size)
                    theirs = feed.chunks(next(naive), size)
                    cpu = _cpu_per_item(_apply, sessions, policy, ours)
                    floor = _cpu_per_item(_naive, sessions, theirs)
                    if round_:
                        results.setdefault(f"batch {size}", []).append(cpu)
                        results.setdefault(f"batch {size} floor", []).append(floor)
                cpu = _cpu_per_item(_failures, sessions, policy, next(failing))
                singles = [[item] for item in next(naive)[:failures_per_round]]
                floor = _cpu_per_item(_naive, sessions, singles)
                if round_:
                    results.setdefault("failure", []).append(cpu)
                    results.setdefault("failure floor", []).append(floor)
            engine.dispose()
        for label in [f"batch {size}" for size in BATCHES] + ["failure"]:
            ours_s = statistics.median(results[label])
            floor_s = statistics.median(results[f"{label} floor"])
            unit = "per failed document" if label == "failure" else f"batches of {label[6:]}"
            rows.append(
                [
                    kind,
                    unit,
                    f"{ours_s * 1e6:,.0f}",
                    f"{floor_s * 1e6:,.0f}",
                    times(ours_s / floor_s),
                ]
            )
    table(
        "store + process, one transaction per batch",
        ["db", "what", "respawn us", "raw INSERT us", "x raw INSERT"],
        rows,
        "us: the thread's CPU per event (per failed document: with its decision, its\n"
        f"restart queued and claimed), median of {rounds} rounds; raw INSERT: the same events\n"
        "(one per failure) stored as plain rows, one transaction per batch, same rounds.",
    )
