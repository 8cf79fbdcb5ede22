"""Run respawn's benchmarks: `python bench/run.py [--only NAME] [--quick]` (`make bench`).

Each benchmark prints a small table whose figures are ratios against a baseline measured in
the same run; absolute numbers are printed too but drift with the machine's load.
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `bench` and `app` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import DEFAULT_POSTGRES_URL, Context, Databases, guard_loopback, quiet_logs

BENCHMARKS = (
    "ingest", "latency", "huge", "apply", "receiver", "decision", "reads", "dispatcher", "backtest",
    "insights",
)  # fmt: skip


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only", action="append", choices=BENCHMARKS, metavar="NAME",
        help=f"run only this benchmark (repeatable): {', '.join(BENCHMARKS)}",
    )  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="a short smoke run (under a minute)")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("RESPAWN_BENCH_POSTGRES_URL", DEFAULT_POSTGRES_URL),
        help="admin URL of a loopback PostgreSQL server (env RESPAWN_BENCH_POSTGRES_URL)",
    )
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")
    parser.add_argument(
        "--show-sql", action="store_true", help="reads: print the slowest query of each page"
    )
    return parser.parse_args(argv)


def _machine(databases: Databases) -> str:
    load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",)
    return (
        f"python {platform.python_version()}, {os.cpu_count()} cpus, "
        f"load {' '.join(f'{x:.2f}' for x in load)}, SQLite {sqlite3.sqlite_version}, "
        f"{databases.postgres_note}"
    )


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    guard_loopback()
    quiet_logs()
    chosen = args.only or list(BENCHMARKS)
    scratch = Path(tempfile.mkdtemp(prefix="respawn-bench-"))
    databases = Databases(scratch, None if args.no_postgres else args.postgres_url)
    ctx = Context(args.quick, databases, scratch, show_sql=args.show_sql)
    print(f"respawn benchmarks ({'quick' if args.quick else 'full'}): {_machine(databases)}")
    started = time.perf_counter()
    try:
        for name in chosen:
            module = importlib.import_module(f"bench.{name}")
            print(f"\n=== {module.TITLE} ({name}) ===")
            began = time.perf_counter()
            module.run(ctx)
            print(f"\n[{name}: {time.perf_counter() - began:.0f} s]")
    finally:
        databases.close()
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"\nall done in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
