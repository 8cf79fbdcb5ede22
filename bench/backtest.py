"""Backtest memory: peak RSS of `respawn policy backtest` over N and 10N stored decisions.

The claim (app/core/backtest.py) is flat memory: decisions are read in keyset batches and only
bounded state is kept. Each run is a fresh process (`python -m app.cli policy backtest`)
whose peak RSS is its VmHWM (/proc/self/status) read as it exits. Baseline, in the same run:
the same command over a database with no decisions (the interpreter, the app, the driver).
Each database gets a fresh copy per size, seeded with failure-dense history (bench/seed.py).
"""

from __future__ import annotations

import os
import resource
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench.common import CALLBACK_TOKEN, PROJECT, PROJECT_POLICY, Context, table, times
from bench.seed import seed

NAME = "backtest"
TITLE = "Backtest memory"
DECISIONS_PER_EXECUTION = 1.39  # with every first run failing (bench/seed.py's odds)


@dataclass
class Run:
    decisions: int
    peak_mb: float
    seconds: float
    exit_code: int
    output: str


# The child reports its own high-water mark at exit. Not wait4's ru_maxrss: on Linux that
# also counts the parent's memory the child was forked from (kept across exec).
_WRAPPER = """
import atexit, sys
def _peak():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                sys.stderr.write("BENCH_PEAK_KB " + line.split()[1] + "\\n")
atexit.register(_peak)
from app.cli import main
main(prog_name="respawn")
"""


def _backtest(url: str, decisions: int) -> Run:
    """Run the command in a child process; its own peak RSS (VmHWM) and wall time."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RESPAWN_")}
    env.update(
        RESPAWN_DATABASE_URL=url,
        RESPAWN_CALLBACK_TOKENS=CALLBACK_TOKEN,
        RESPAWN_SECRET_KEY=secrets.token_hex(16),
        RESPAWN_DISPATCHER="off",
        RESPAWN_POLICY_FILE=str(PROJECT_POLICY),
        RESPAWN_LOG_LEVEL="WARNING",
    )
    argv = [sys.executable, "-c", _WRAPPER, "policy", "backtest",
            "--policy", str(PROJECT_POLICY), "--since", "31d"]  # fmt: skip
    began = time.perf_counter()
    done = subprocess.run(argv, cwd=PROJECT, env=env, capture_output=True, check=False)
    seconds = time.perf_counter() - began
    errors = done.stderr.decode(errors="replace")
    peaks = [line.split()[1] for line in errors.splitlines() if line.startswith("BENCH_PEAK_KB")]
    peak_mb = int(peaks[-1]) / 1024 if peaks else float("nan")
    output = done.stdout.decode(errors="replace") + errors
    return Run(decisions, peak_mb, seconds, done.returncode, output)


def _available() -> str:
    if not Path("/proc/self/status").is_file():
        return "peak RSS is read from /proc (Linux only)"
    if not (PROJECT / "app" / "core" / "backtest.py").is_file():
        return "app/core/backtest.py does not exist yet"
    probe = subprocess.run(
        [sys.executable, "-m", "app.cli", "policy", "backtest", "--help"],
        cwd=PROJECT,
        capture_output=True,
        check=False,
    )
    return "" if probe.returncode == 0 else "`respawn policy backtest` is not registered yet"


def run(ctx: Context) -> None:
    missing = _available()
    if missing:
        print(f"\nskipped: {missing}")
        return
    small = ctx.size(2_000, 100)
    sizes = (0, small, small * 10)
    rows = []
    problems = []
    # Each size is a fresh process (~3 s of start-up alone): a quick run checks SQLite only.
    for kind in ctx.databases.kinds[:1] if ctx.quick else ctx.databases.kinds:
        runs: dict[int, Run] = {}
        for size in sizes:
            with ctx.databases.database(kind) as url:
                stored = 0
                if size:
                    info = seed(url, round(size / DECISIONS_PER_EXECUTION), fail_share=1.0)
                    stored = info.rows["decisions"]
                runs[size] = _backtest(url, stored)
                if runs[size].exit_code != 0:
                    problems.append(f"{kind} {size}: exit {runs[size].exit_code}: "
                                    f"{runs[size].output.strip()[-300:]}")  # fmt: skip
        base = runs[0]
        for size in sizes:
            item = runs[size]
            replay = item.seconds - base.seconds  # start-up (the baseline's time) excluded
            rows.append(
                [
                    kind,
                    f"{item.decisions:,}" + (" (baseline)" if size == 0 else ""),
                    f"{item.peak_mb:.1f}",
                    f"{item.peak_mb - base.peak_mb:+.1f}",
                    "1 (baseline)" if size == 0 else times(item.peak_mb / base.peak_mb),
                    f"{item.seconds:.1f}",
                    f"{item.decisions / replay:,.0f}" if item.decisions and replay > 0 else "-",
                ]
            )
        small_run, large_run = runs[sizes[1]], runs[sizes[2]]
        replay_ratio = (large_run.seconds - base.seconds) / max(
            small_run.seconds - base.seconds, 1e-3
        )
        rows.append(
            [
                kind,
                "10N vs N",
                "",
                f"{large_run.peak_mb - small_run.peak_mb:+.1f}",
                times(large_run.peak_mb / small_run.peak_mb),
                times(replay_ratio),
                "",
            ]
        )
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    table(
        "Peak RSS of `respawn policy backtest --policy policy.yaml --since 31d`",
        ["database", "stored decisions", "peak MB", "MB over baseline", "x baseline",
         "seconds", "decisions/s"],
        rows,
        "baseline: the same command over an empty database (interpreter, app, driver).\n"
        "decisions/s: over the time beyond the baseline's (start-up excluded).\n"
        "10N vs N: growth of the peak between the two sizes (flat memory: near +0 MB, 1.0x);\n"
        "its seconds column is the ratio of replay times, start-up excluded (linear: ~10x).\n"
        f"(this benchmark process itself peaked at {own:.0f} MB; not part of the figures)"
        + ("\nPROBLEMS: " + "; ".join(problems) if problems else ""),
    )  # fmt: skip
