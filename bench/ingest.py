"""The front door over real sockets: sustained ingest through `respawn serve` under wrk.

Each subject is served by gunicorn with respawn's shipped settings (app/gunicorn_conf.py) and
posted unique bodies by wrk over 16 keep-alive connections:

- "parse only": a Flask route that parses the JSON and answers 202 (the web floor);
- "naive": parse, one INSERT (an executemany for arrays) and a commit per request;
- "respawn": `respawn serve` at its defaults, on a fresh database.

Only events respawn has fully processed by the end of the run count (stored, applied to
their execution, failed hosts recorded, failures decided, restarts queued); latency
percentiles come from wrk. For respawn, the processing lag (from a callback's arrival to its
deliveries applied and decided, `respawn_processing_lag_seconds`) is read from /metrics at
the end of the run, with the deliveries still waiting in the inbox then. Ratios are to the
naive receiver on the same database in the same run. Needs `wrk` (Debian: apt-get install
wrk).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from sqlalchemy import func, inspect, select, text

from app.db import make_engine, utcnow
from app.models import Event
from bench import cpu, feed
from bench.baselines import create_naive_table
from bench.common import CALLBACK_TOKEN, PROJECT, Context, free_port, table

NAME = "ingest"
TITLE = "Front door: sustained ingest through gunicorn (wrk)"
CONNECTIONS = 16
WORKERS = 2  # `respawn serve`'s default, and the baselines'
WRK_THREADS = 2
BATCH = 50
LUA = PROJECT / "bench" / "wrk_post.lua"
POLICY = PROJECT / "policy.yaml"
SECRET_KEY = "bench-secret-key-0123456789abcdef0123456789abcdef"


@dataclass
class WrkResult:
    requests: int
    seconds: float
    non2xx: int
    socket_errors: int
    p50_ms: float
    p99_ms: float
    max_ms: float

    @classmethod
    def parse(cls, output: str) -> WrkResult:
        line = next(x for x in output.splitlines() if x.startswith("WRK_JSON "))
        data = json.loads(line.removeprefix("WRK_JSON "))
        return cls(
            requests=data["requests"],
            seconds=data["duration_us"] / 1e6,
            non2xx=data["non2xx"],
            socket_errors=data["connect"] + data["read"] + data["write"] + data["timeout"],
            p50_ms=data["p50_us"] / 1000,
            p99_ms=data["p99_us"] / 1000,
            max_ms=data["max_us"] / 1000,
        )


def write_bodies(path: Path, events: list[dict[str, Any]], per_body: int) -> None:
    with path.open("w") as out:
        if per_body == 1:
            for item in events:
                out.write(json.dumps(item, separators=(",", ":")) + "\n")
        else:
            for chunk in feed.chunks(events, per_body):
                out.write(json.dumps(chunk, separators=(",", ":")) + "\n")


def wrk(url: str, bodies: Path, seconds: float) -> WrkResult:
    done = subprocess.run(
        [
            "wrk", f"-t{WRK_THREADS}", f"-c{CONNECTIONS}", f"-d{seconds:g}s", "--timeout", "2s",
            "-s", str(LUA), url, "--", str(bodies), str(WRK_THREADS),
        ],
        capture_output=True, text=True, check=True, timeout=seconds + 60,
    )  # fmt: skip
    return WrkResult.parse(done.stdout)


def _wait_healthy(base: str, process: subprocess.Popen[bytes], log: Path) -> None:
    """Until the server answers and every worker is up: the first worker answers while the
    second still boots, and wrk's connections, opened at once and kept alive, would all
    stay with the first."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited: {log.read_text()[-2000:]}")
        try:
            healthy = requests.get(f"{base}/healthz", timeout=1).status_code == 200
        except requests.RequestException:
            healthy = False
        if healthy and log.read_text().count("Worker ready") >= WORKERS:
            return
        time.sleep(0.1)
    raise RuntimeError(f"server did not become healthy: {log.read_text()[-2000:]}")


class Served(str):
    """A served subject's base URL, which also knows the server's process id."""

    pid: int

    def __new__(cls, base: str, pid: int) -> Served:
        served = super().__new__(cls, base)
        served.pid = pid
        return served


@contextmanager
def served(argv: list[str], env: dict[str, str], log: Path, port: int) -> Iterator[Served]:
    with log.open("wb") as out:
        process = subprocess.Popen(argv, cwd=PROJECT, env=env, stdout=out, stderr=subprocess.STDOUT)
    base = Served(f"http://127.0.0.1:{port}", process.pid)
    try:
        _wait_healthy(base, process, log)
        yield base
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def _base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RESPAWN_", "BENCH_"))}
    env["PYTHONPATH"] = str(PROJECT)
    return env


def baseline(name: str, database_url: str | None, log: Path) -> Any:
    port = free_port()
    env = _base_env()
    if database_url:
        env["BENCH_DATABASE_URL"] = database_url
    argv = [
        sys.executable, "-m", "gunicorn", "-c", str(PROJECT / "bench" / "gunicorn_baseline.py"),
        "--bind", f"127.0.0.1:{port}",
        f"bench.baselines:{name}()",
    ]  # fmt: skip
    return served(argv, env, log, port)


def respawn(
    database_url: str, instance: Path, log: Path, extra: dict[str, str] | None = None
) -> Any:
    """`respawn serve` at its defaults on `database_url` (plus `extra` settings)."""
    port = free_port()
    env = _base_env()
    env.update(
        RESPAWN_DATABASE_URL=database_url,
        RESPAWN_SECRET_KEY=SECRET_KEY,
        RESPAWN_CALLBACK_TOKENS=CALLBACK_TOKEN,
        RESPAWN_POLICY_FILE=str(POLICY),
        RESPAWN_LOG_LEVEL="WARNING",
        RESPAWN_SPOOL_DIR=str(instance / "spool"),
    )
    env.update(extra or {})
    argv = [
        sys.executable, "-m", "app.cli", "serve", "--bind", f"127.0.0.1:{port}",
    ]  # fmt: skip
    return served(argv, env, log, port)


def inbox_events(database_url: str) -> tuple[int, int]:
    """Events stored and applied, and those still waiting in the inbox (pending)."""
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            columns = {c["name"] for c in inspect(connection).get_columns("events")}
            if "pending" not in columns:  # a schema from before the inbox
                return int(connection.execute(select(func.count()).select_from(Event)).one()[0]), 0
            applied = func.count().filter(text("NOT pending"))
            waiting = func.count().filter(text("pending"))
            row = connection.execute(select(applied, waiting).select_from(Event)).one()
            return int(row[0]), int(row[1])
    finally:
        engine.dispose()


LAG_BUCKET = re.compile(r'^respawn_processing_lag_seconds_bucket\{le="([^"]+)"\} (\S+)$', re.M)


def processing_lag(base: str) -> tuple[float, float]:
    """From /metrics: the share of callbacks processed within 1 s of their arrival, and the
    bucket bound that 99% were processed within."""
    exposition = requests.get(f"{base}/metrics", timeout=10).text
    buckets = sorted((float(le), float(count)) for le, count in LAG_BUCKET.findall(exposition))
    total = buckets[-1][1] if buckets else 0.0
    if not total:
        return 0.0, math.inf
    within_1s = next(count for le, count in buckets if le >= 1.0) / total
    p99 = next(le for le, count in buckets if count >= 0.99 * total)
    return within_1s, p99


@dataclass
class Row:
    subject: str
    result: WrkResult
    events: int  # events that count: posted (baselines) or fully processed (respawn)
    lag: tuple[float, float] | None = None  # respawn: share within 1 s, p99 bucket
    pending: int = 0  # respawn: deliveries still in the inbox at the end of the run
    cpu: dict[str, float] = field(default_factory=dict)  # the workers' CPU seconds, by part

    @property
    def rate(self) -> float:
        return self.events / self.result.seconds

    def cpu_ms(self, *parts: str) -> float:
        """The workers' CPU per event that counts, in ms (in these parts, or all)."""
        spent = sum(self.cpu.get(p, 0.0) for p in parts) if parts else sum(self.cpu.values())
        return spent * 1000 / max(self.events, 1)


def _loaded(base: Served, bodies: Path, seconds: float) -> tuple[WrkResult, dict[str, float]]:
    """wrk's result against `base`, and the CPU its workers spent meanwhile, by part."""
    before = cpu.snapshot(base.pid)
    result = wrk(base + f"/callbacks/{CALLBACK_TOKEN}", bodies, seconds)
    return result, cpu.spent(before, cpu.snapshot(base.pid))


def _measure(ctx: Context, kind: str, per_body: int, seconds: float) -> list[Row]:
    scratch = ctx.folder(f"ingest-{kind}-{per_body}")
    bodies = scratch / "bodies.jsonl"
    rate_cap = 6000 if per_body == 1 else 300
    executions = int(rate_cap * seconds * per_body / 20) + 20
    now_ms = int(time.time() * 1000)
    events = feed.flat(feed.feed(executions, 7, start_ms=now_ms - executions * 1000))
    write_bodies(bodies, events, per_body)
    rows: list[Row] = []
    with baseline("parse_app", None, scratch / "parse.log") as base:
        result, spent = _loaded(base, bodies, seconds)
        rows.append(Row("parse only", result, result.requests * per_body, cpu=spent))
    with ctx.databases.database(kind) as url:
        create_naive_table(url)
        with baseline("naive_app", url, scratch / "naive.log") as base:
            result, spent = _loaded(base, bodies, seconds)
        rows.append(Row("naive receiver", result, result.requests * per_body, cpu=spent))
    with ctx.databases.database(kind) as url:
        with respawn(url, ctx.folder(f"ingest-instance-{kind}"), scratch / "respawn.log") as base:
            result, spent = _loaded(base, bodies, seconds)
            processed, pending = inbox_events(url)
            lag = processing_lag(base)
        rows.append(Row("respawn", result, processed, lag, pending, spent))
    return rows


def run(ctx: Context) -> None:
    if shutil.which("wrk") is None:
        print("skipped: wrk is not installed (Debian: apt-get install wrk)")
        return
    seconds = ctx.size(15.0, 4.0)
    print(
        f"\n{CONNECTIONS} connections, {WRK_THREADS} wrk threads, {seconds:g} s per subject; "
        f"started {utcnow():%H:%M:%S} UTC"
    )
    for per_body, label in ((1, "single events"), (BATCH, f"arrays of {BATCH}")):
        printed: list[list[str]] = []
        spending: list[list[str]] = []
        for kind in ctx.databases.kinds:
            rows = _measure(ctx, kind, per_body, seconds)
            naive = next(r for r in rows if r.subject == "naive receiver")
            spending += _cpu_rows(kind, rows, naive)
            for row in rows:
                printed.append(
                    [
                        kind,
                        row.subject,
                        f"{row.rate:,.0f}",
                        f"{row.result.p50_ms:.1f}",
                        f"{row.result.p99_ms:.1f}",
                        f"{row.result.non2xx + row.result.socket_errors}",
                        f"{row.rate / naive.rate:.2f}x",
                        f"{row.result.p99_ms / naive.result.p99_ms:.2f}x",
                        _lag(row),
                    ]
                )
        table(
            label,
            ["db", "subject", "events/s", "p50 ms", "p99 ms", "errors", "rate", "p99", "lag"],
            printed,
            "events/s: events posted (baselines) or fully processed by the end of the run\n"
            "(respawn); rate and p99: relative to the naive receiver on the same database;\n"
            "lag (respawn): callbacks applied and decided within 1 s of arriving, the bound 99%\n"
            "were within, and the deliveries still waiting in the inbox when the run ended.",
        )
        if spending:
            table(
                f"{label}: where the workers' CPU goes",
                ["db", "subject", "ms/event", *cpu.PARTS, "x naive", "web x naive"],
                spending,
                "ms/event: CPU of both worker processes per event counted (as events/s\n"
                "above), by thread: web (gunicorn and the request threads), the intake's\n"
                "writer and processor, other background threads (app/threads.py names them);\n"
                "x naive: the whole, and the web threads alone, to the naive receiver's whole.",
            )


def _cpu_rows(kind: str, rows: list[Row], naive: Row) -> list[list[str]]:
    floor = naive.cpu_ms()
    if not cpu.available() or floor <= 0:
        return []
    return [
        [
            kind,
            row.subject,
            f"{row.cpu_ms():.3f}",
            *(f"{row.cpu_ms(part):.3f}" for part in cpu.PARTS),
            f"{row.cpu_ms() / floor:.2f}x",
            f"{row.cpu_ms('web') / floor:.2f}x",
        ]
        for row in rows
    ]


def _lag(row: Row) -> str:
    if row.lag is None:
        return ""
    within, p99 = row.lag
    return f"{within:.1%} <=1s, p99 <={p99:g}s, {row.pending:,} waiting"
