"""Restart insights: how well `policy suggest` finds planted patterns, and what the Insights
page and `policy suggest` cost as the history grows.

Precision and recall: histories with many planted signatures (bench/plant.py,
`bench_patterns`: signatures that never recover, recover on the second try, recover only
after a long wait, recover at once, and noise below ten samples), their odds drawn at random,
over several seeds. A suggestion is right when its kind is the planted one; any suggestion for
a healthy or noise signature, or of the wrong kind, is a false positive.

Cost: a history of N executions (a fifth of them failing, spread over the planted signatures,
over 28 days), at 1,000 and at 100,000, both planted first, then timed in the same
interleaved rounds (so a busy spell weighs on both sizes alike): `GET /admin/insights`
through Flask's test client (signed in), and `respawn policy suggest --no-backtest` (the
suggestions alone) through click's runner, which builds its runtime from the environment as
in production. The full command, with its two backtests, is timed too, a few rounds: the
backtest replays every decision of the period, so it grows with the history by design.
"""

from __future__ import annotations

import datetime as dt
import random
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path

from click.testing import CliRunner
from sqlalchemy.orm import Session

from app.cli import main
from app.core.insights_read import rank_signatures, signature_stats
from app.core.suggest import suggest
from app.db import make_engine
from app.policy import parse_policy
from bench.common import (
    CALLBACK_TOKEN,
    Context,
    Sample,
    interleave,
    ms,
    running_app,
    table,
    times,
)
from bench.plant import PLANT_POLICY, bench_patterns, plant
from bench.reads import _log_in

PAGE = "GET /admin/insights"
SUGGEST = "policy suggest --no-backtest"
FULL = "policy suggest (with backtests)"
NAME = "insights"
TITLE = "Restart insights: suggestion accuracy and cost at scale"
FAILING_SHARE = 0.2
PLANTED_PER_SCALE = 1950
ACCURACY_SCALES = (2.0, 0.5)
"""History sizes for precision and recall: at 0.5x, a signature has some 15 to 40 restarts."""
"""Failing executions `bench_patterns` plants at scale 1 (about)."""


def _accuracy(ctx: Context) -> None:
    for scale in ACCURACY_SCALES:
        _accuracy_at(ctx, scale)


def _accuracy_at(ctx: Context, scale: float) -> None:
    policy = parse_policy(PLANT_POLICY, "plant.yaml")
    rows = []
    totals = {"tp": 0, "fp": 0, "fn": 0}
    for seed in range(ctx.size(6, 2)):
        with ctx.databases.database("sqlite") as url:
            planted = plant(url, bench_patterns(random.Random(seed), scale), seed=seed)
            engine = make_engine(url)
            with Session(engine) as session:
                keys, _ = rank_signatures(session, _first_day(), 1000)
                found = suggest(signature_stats(session, keys, _first_day()), policy, 10)
            engine.dispose()
        made = {s.signature: s.kind for s in found}
        tp = sum(1 for key, kind in made.items() if planted.expected.get(key) == kind)
        fp = len(made) - tp
        fn = sum(1 for key, kind in planted.expected.items() if kind and made.get(key) != kind)
        for name, value in (("tp", tp), ("fp", fp), ("fn", fn)):
            totals[name] += value
        planted_count = sum(1 for kind in planted.expected.values() if kind)
        rows.append([str(seed), str(len(planted.expected)), str(planted_count), str(len(made)),
                     str(tp), str(fp), str(fn)])  # fmt: skip
    precision = totals["tp"] / max(totals["tp"] + totals["fp"], 1)
    recall = totals["tp"] / max(totals["tp"] + totals["fn"], 1)
    rows.append(["all", "", "", "", str(totals["tp"]), str(totals["fp"]), str(totals["fn"])])
    table(
        f"Suggestions against planted patterns, {scale:g}x (about {PLANTED_PER_SCALE * scale:,.0f} "
        "failing executions a history; min-samples 10)",
        ["seed", "signatures", "planted", "suggested", "right", "wrong", "missed"],
        rows,
        f"precision {precision:.3f}, recall {recall:.3f}",
    )


def _first_day() -> dt.date:
    return (dt.datetime.now(dt.UTC) - dt.timedelta(days=30)).date()


def _env(ctx: Context, url: str, tag: str) -> dict[str, str]:
    policy_file = ctx.folder(f"insights-{tag}") / "policy.yaml"
    policy_file.write_text(PLANT_POLICY)
    return {
        "RESPAWN_DATABASE_URL": url,
        "RESPAWN_SECRET_KEY": "bench-secret-key-0123456789abcdef",
        "RESPAWN_CALLBACK_TOKENS": CALLBACK_TOKEN,
        "RESPAWN_POLICY_FILE": str(policy_file),
        "RESPAWN_DISPATCHER": "off",
        "RESPAWN_LOG_LEVEL": "WARNING",
    }


def _page(ctx: Context, stack: ExitStack, env: dict[str, str], tag: str) -> Callable[[int], float]:
    """`GET /admin/insights`, signed in, through the test client of an app on the history."""
    policy_file = Path(env["RESPAWN_POLICY_FILE"])
    url = env["RESPAWN_DATABASE_URL"]
    app = stack.enter_context(running_app(url, policy_file, ctx.folder(f"instance-{tag}")))
    client, why = _log_in(app)
    if client is None:
        raise RuntimeError(why)

    def page(_index: int) -> float:
        response = client.get("/admin/insights")
        response.get_data()
        assert response.status_code == 200, response.status_code
        return 1.0

    return page


def _suggest(env: dict[str, str], *args: str) -> Callable[[int], float]:
    """`respawn policy suggest`, its runtime built from the environment as in production."""
    runner = CliRunner()

    def call(_index: int) -> float:
        result = runner.invoke(main, ["policy", "suggest", *args], env=env)
        if result.exit_code != 0:
            raise RuntimeError(result.output)
        return 1.0

    return call


def _measure(
    ctx: Context, kind: str, sizes: Sequence[int]
) -> tuple[dict[str, Sample], dict[int, tuple[float, int]]]:
    """Plant a history of each size, then time the page and the suggestions over all of them
    in the same interleaved rounds, so a busy spell weighs on every size alike; the full
    command, with its backtests, a few rounds. Also: how long each history took to plant."""
    seeded: dict[int, tuple[float, int]] = {}
    subjects: dict[str, Callable[[int], float]] = {}
    full: dict[str, Callable[[int], float]] = {}
    with ExitStack() as stack:
        for size in sizes:
            url = stack.enter_context(ctx.databases.database(kind))
            failing = size * FAILING_SHARE
            began = time.perf_counter()
            planted = plant(url, bench_patterns(random.Random(1), failing / PLANTED_PER_SCALE),
                            days=28, successes=max(0, size - round(failing)), seed=1)  # fmt: skip
            seeded[size] = (time.perf_counter() - began, planted.executions)
            env = _env(ctx, url, f"{size}")
            subjects[f"{PAGE} @{size}"] = _page(ctx, stack, env, f"{size}")
            subjects[f"{SUGGEST} @{size}"] = _suggest(env, "--no-backtest")
            full[f"{FULL} @{size}"] = _suggest(env)
        samples = interleave(subjects, ctx.size(100, 5), budget_seconds=ctx.size(240, 30))
        samples |= interleave(full, ctx.size(3, 1))
    return samples, seeded


def run(ctx: Context) -> None:
    _accuracy(ctx)
    small, large = ctx.size(1_000, 1_000), ctx.size(100_000, 10_000)
    rows = []
    for kind in ctx.databases.kinds:
        samples, seeded = _measure(ctx, kind, (small, large))
        for name in (PAGE, SUGGEST, FULL):
            low, high = samples[f"{name} @{small}"], samples[f"{name} @{large}"]
            rows.append([kind, name, ms(low.median), ms(low.p95), ms(high.median), ms(high.p95),
                         times(high.p95 / low.p95), str(len(high.per_unit))])  # fmt: skip
        took, executions = seeded[large]
        rows.append([kind, f"(seeding {executions:,} executions)", "", "", f"{took:.0f} s",
                     "", "", ""])  # fmt: skip
    table(
        f"Insights at {large:,} executions against {small:,}",
        ["database", "what", f"median @{small:,}", f"p95 @{small:,}", f"median @{large:,}",
         f"p95 @{large:,}", "p95 ratio", "rounds"],
        rows,
        "p95 ratio: p95 at the larger history over p95 at the smaller, both timed in the same\n"
        "interleaved rounds (goal for the page and the suggestions: at most 1.5x). The full\n"
        "command replays the period twice (backtest).",
    )  # fmt: skip
