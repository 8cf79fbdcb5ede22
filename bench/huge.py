"""One execution document naming 10,000 failed hosts, through `respawn serve` at its defaults.

Measured on each database: how long the document takes to be answered and to be fully
applied (every host recorded, the failure decided), and how long a small callback sent 20 ms
after it waits for its answer. Baselines in the same run: the same small callback alone
(no document in the way), and the document posted to the naive receiver (parse, one INSERT,
commit) under the same gunicorn settings.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import requests
from sqlalchemy import func, select

from app.db import make_engine
from app.models import Decision, HostFailure
from bench import feed
from bench.baselines import create_naive_table
from bench.common import CALLBACK_TOKEN, Context, percentile, table
from bench.ingest import baseline, respawn

NAME = "huge"
TITLE = "A document naming 10,000 failed hosts, and a small callback behind it"
HOSTS = 10_000
SMALL_DELAY = 0.02


def _document(n: int) -> dict[str, Any]:
    hosts = [f"host-{h:05d}" for h in range(HOSTS)]
    return feed.failed_document(f"exec-huge-{n}", "job-huge", hosts, int(time.time() * 1000))


def _small(n: int) -> dict[str, Any]:
    return {
        "id": f"small-{n}-{time.monotonic_ns()}",
        "timestamp": int(time.time() * 1000),
        "account_alias": "BENCH",
        "job_id": "job-small",
        "execution_id": f"exec-small-{n}",
        "event_type": "runner_on_ok",
        "message": {"host": "web1", "changed": False},
    }


def _post(url: str, body: Any) -> float:
    start = time.monotonic()
    requests.post(url, json=body, timeout=60).raise_for_status()
    return time.monotonic() - start


def _applied(database_url: str, n: int) -> bool:
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            hosts = connection.execute(select(func.count()).select_from(HostFailure)).scalar()
            decided = connection.execute(select(func.count()).select_from(Decision)).scalar()
        return hosts == HOSTS * (n + 1) and decided == n + 1
    finally:
        engine.dispose()


def _round(url: str, database_url: str | None, n: int) -> tuple[float, float, float]:
    """(document answered, document applied, small answered) in seconds."""
    done: dict[str, float] = {}
    start = time.monotonic()

    def big() -> None:
        done["answered"] = _post(url, _document(n))

    thread = threading.Thread(target=big)
    thread.start()
    time.sleep(SMALL_DELAY)
    small = _post(url, _small(n))
    thread.join(60)
    applied = 0.0
    if database_url is not None:
        while not _applied(database_url, n):
            time.sleep(0.005)
        applied = time.monotonic() - start
    return done["answered"], applied, small


def run(ctx: Context) -> None:
    rounds = ctx.size(5, 2)
    path = f"/callbacks/{CALLBACK_TOKEN}"
    rows = []
    for kind in ctx.databases.kinds:
        with ctx.databases.database(kind) as url:
            folder = ctx.folder(f"huge-{kind}")
            with respawn(url, folder, folder / "respawn.log") as base:
                alone = [_post(base + path, _small(1000 + n)) for n in range(20)]
                measured = [_round(base + path, url, n) for n in range(rounds)]
        with ctx.databases.database(kind) as url:
            create_naive_table(url)
            with baseline("naive_app", url, ctx.folder(f"huge-naive-{kind}") / "naive.log") as b:
                naive = [_post(b + path, _document(n)) for n in range(rounds)]
        alone_p50 = percentile(alone, 50)
        naive_p50 = percentile(naive, 50)
        answered = percentile([m[0] for m in measured], 50)
        applied = percentile([m[1] for m in measured], 50)
        small = max(m[2] for m in measured)
        rows.append(
            [
                kind,
                f"{1000 * answered:.0f}",
                f"{1000 * applied:.0f}",
                f"{1000 * naive_p50:.0f}",
                f"{applied / naive_p50:.1f}x",
                f"{1000 * small:.0f}",
                f"{1000 * alone_p50:.1f}",
            ]
        )
    table(
        f"10,000 failed hosts in one document, {rounds} rounds (median; small: worst)",
        ["db", "answered ms", "applied ms", "naive ms", "applied/naive", "small ms", "alone ms"],
        rows,
        "answered/applied: the document's answer, and every host recorded and the failure\n"
        "decided, from its POST; naive: the document posted to the naive receiver; small:\n"
        f"a small callback sent {1000 * SMALL_DELAY:.0f} ms after the document, until its "
        "answer; alone: the same small callback with nothing in the way.",
    )
