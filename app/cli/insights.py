"""``respawn insights rebuild`` and ``respawn policy suggest``: restart insights recomputed,
and the policy rules they support, with their evidence and a backtest of them."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import click

from app.cli.common import positive_duration, runtime_from_env
from app.core import backtest, insights, suggest
from app.core.backtest import BacktestReport
from app.core.insights_read import rank_signatures, signature_stats
from app.db import utcnow
from app.policy import PolicyError, format_duration, parse_policy

MAX_SIGNATURES = 1000
"""Signatures `policy suggest` looks at: the busiest within --since."""
BUILTIN_TEXT = "version: 1\n"


@click.group("insights")
def insights_group() -> None:
    """Restart insights: what restarts of each error signature achieved."""


@insights_group.command("rebuild")
def rebuild_command() -> None:
    """Recompute the insight counters from the stored record.

    Run it after a change of the message normaliser or to repair the counters; one
    transaction, so the Insights page shows the old counters until it commits.
    """
    with runtime_from_env() as runtime, runtime.transaction() as session:
        rebuilt = insights.rebuild(session)
    click.echo(
        f"insights rebuilt: {rebuilt.failures} failures, {rebuilt.restarts} restarts "
        f"({rebuilt.settled} finished), {rebuilt.rows} counter rows"
    )


@click.command("suggest")
@click.option(
    "--since",
    default="30d",
    metavar="DURATION",
    show_default=True,
    callback=positive_duration,
    help="learn from the failures of this long before now (whole days)",
)
@click.option(
    "--min-samples",
    default=10,
    show_default=True,
    type=click.IntRange(min=1),
    help="no suggestion rests on fewer finished restarts than this",
)
@click.option("--no-backtest", is_flag=True, help="print the suggestions only")
def suggest_command(since: dt.timedelta, min_samples: int, no_backtest: bool) -> None:
    """Suggest policy rules from restart insights, with their evidence.

    Prints a YAML snippet of rules to paste at the top of `rules:` (skip a signature whose
    restarts almost never help, a higher max_restarts where the last attempt still succeeds, a
    longer backoff where quick first restarts fail and later ones succeed), each with its
    sample size and Wilson interval; then the backtest of the policy in force against the
    policy with the suggestions first. Nothing is applied. See docs/policy.md, "Suggestions".
    """
    now = utcnow()
    first_day = (now - since).date()
    with runtime_from_env() as runtime:
        loaded = runtime.current_policy()
        with runtime.transaction() as session:
            keys, total = rank_signatures(session, first_day, MAX_SIGNATURES)
            stats = signature_stats(session, keys, first_day)
        found = suggest.suggest(stats, loaded.policy, min_samples)
        click.echo(
            f"# respawn policy suggest: {len(found)} suggestion{'' if len(found) == 1 else 's'} "
            f"from {total} error signature{'' if total == 1 else 's'} seen since {first_day} "
            f"(at least {min_samples} finished restarts each)"
        )
        if not found:
            click.echo("# no suggestions: the record supports no change to the policy")
            return
        click.echo("# paste these at the top of `rules:` (the first rule that matches decides)")
        click.echo(suggest.snippet(found), nl=False)
        if no_backtest:
            return
        base_text = _policy_text(loaded.source)
        try:
            base = parse_policy(base_text, loaded.source)
            candidate = parse_policy(suggest.candidate_text(base_text, found), "suggested")
        except PolicyError as exc:
            raise click.ClickException(f"the suggested policy does not load: {exc}") from None
        reports = [
            backtest.run_backtest(runtime.transaction, policy, now - since, now)
            for policy in (base, candidate)
        ]
    for line in _comparison(reports[0], reports[1], since):
        click.echo(line)


def _policy_text(source: str) -> str:
    if source == "builtin":
        return BUILTIN_TEXT
    try:
        return Path(source).read_text(encoding="utf-8")
    except OSError:
        return BUILTIN_TEXT


def _comparison(
    current: BacktestReport, proposed: BacktestReport, since: dt.timedelta
) -> list[str]:
    saved = current.candidate.restarts - proposed.candidate.restarts
    lines = [
        "",
        f"# backtest over the last {format_duration(since)} "
        f"({current.failed_runs} failed runs decided):",
        f"#   {'':34}{'current':>10}{'suggested':>11}",
        f"#   {'restarts':34}{current.candidate.restarts:>10}{proposed.candidate.restarts:>11}",
        f"#   {'recoveries kept':34}{current.recoveries_kept:>10}{proposed.recoveries_kept:>11}",
        f"#   {'recoveries lost':34}{current.recoveries_lost:>10}{proposed.recoveries_lost:>11}",
        f"#   {'decisions differing from record':34}{current.differ:>10}{proposed.differ:>11}",
        f"# restarts saved: {saved}"
        if saved >= 0
        else f"# restarts added: {-saved} (their outcomes are unknown to the replay)",
        "# a recovery is a restart whose next run succeeded; the replay keeps each decision's"
        " time, so a longer backoff shows no effect here (docs/policy.md, Backtesting)",
    ]
    return lines
