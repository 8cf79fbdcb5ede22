"""``respawn policy check|explain|backtest``: a policy file checked, explained, replayed.

``check`` needs only the file; ``explain`` and ``backtest`` read the stored record, with the
database and policy of the environment (``RESPAWN_DATABASE_URL`` ...).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import click

from app.cli.common import positive_duration, runtime_from_env
from app.cli.insights import suggest_command
from app.core import backtest
from app.core.backtest import BacktestReport, Tally, Verdict
from app.core.decision_inputs import decision_input
from app.core.errors import NotFound
from app.core.policy_source import load_policy_file
from app.core.queries import get_execution, stored_decisions
from app.db import utcnow
from app.models import Decision
from app.policy import Decision as PolicyDecision
from app.policy import (
    Explanation,
    Policy,
    PolicyError,
    PolicyProblem,
    explain_decision,
    format_duration,
    format_explanation,
)
from app.runner.documents import FAILED_STATUSES

POLICY_FILE = click.Path(dir_okay=False, path_type=Path)


@click.group("policy")
def policy_group() -> None:
    """Check, explain, backtest and suggest restart policies."""


policy_group.add_command(suggest_command)


def _load_or_fail(file: Path, missing: str = "no such file") -> Policy:
    try:
        return load_policy_file(file, missing)
    except PolicyError as exc:
        _fail(exc.problems)


def _fail(problems: Sequence[PolicyProblem]) -> NoReturn:
    for problem in problems:
        click.echo(str(problem), err=True)
    raise SystemExit(1)


def _when(moment: dt.datetime | None) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if moment else "-"


def _s(count: int) -> str:
    return "" if count == 1 else "s"


def _json(value: Any) -> str:
    def default(item: Any) -> Any:
        if isinstance(item, dt.datetime):
            return item.astimezone(dt.UTC).isoformat()
        raise TypeError(f"cannot serialize {type(item).__name__}")

    return json.dumps(value, indent=2, default=default)


# --- check --------------------------------------------------------------------------------------


@policy_group.command("check")
@click.argument(
    "file", required=False, default="policy.yaml", envvar="RESPAWN_POLICY_FILE", type=POLICY_FILE
)
def check_command(file: Path) -> None:
    """Validate the policy FILE (default: $RESPAWN_POLICY_FILE or policy.yaml).

    Exits 0 when it is valid, 1 with every problem as file:line: message.
    """
    policy = _load_or_fail(file, "no such file (respawn would use the built-in policy)")
    for warning in policy.warnings:
        click.echo(f"{warning} (warning)", err=True)
    count = len(policy.rules)
    click.echo(f"{file}: OK (version {policy.version_hash}, {count} rule{_s(count)})")


# --- explain ------------------------------------------------------------------------------------


@policy_group.command("explain")
@click.argument("execution_id")
@click.option(
    "--policy",
    "policy_file",
    type=POLICY_FILE,
    help="explain under this policy file instead of the policy in force",
)
@click.option("--json", "as_json", is_flag=True, help="print JSON")
def explain_command(execution_id: str, policy_file: Path | None, as_json: bool) -> None:
    """Explain what a policy decides for stored execution EXECUTION_ID.

    Decides as of now, and shows the decision, every rule that matched or did not and why,
    every gate, and the decisions respawn stored for the execution. Exits 1 for an unknown
    execution or an invalid --policy file (every problem as file:line: message).
    """
    candidate = _load_or_fail(policy_file) if policy_file is not None else None
    with runtime_from_env() as runtime:
        if candidate is not None:
            policy, source = candidate, candidate.source
        else:
            loaded = runtime.current_policy()
            policy, source = loaded.policy, f"{loaded.source} (in force)"
        now = utcnow()
        with runtime.transaction() as session:
            try:
                execution = get_execution(session, execution_id)
            except NotFound as exc:
                raise click.ClickException(exc.message) from None
            explanation = explain_decision(policy, decision_input(session, policy, execution, now))
            stored = [_decision_row(row) for row in stored_decisions(session, execution)]
    failed = execution.status in FAILED_STATUSES
    if as_json:
        about = {
            "execution_id": execution.execution_id,
            "job_id": execution.job_id,
            "account": execution.account_alias,
            "status": execution.status,
            "run_index": execution.run_index,
            "run_count": execution.run_count,
            "first_failure_at": execution.first_failure_at,
        }
        click.echo(
            _json(
                {
                    "execution": about,
                    "failed": failed,
                    "policy": {"source": source, "version": policy.version_hash},
                    "now": now,
                    **_explanation_dict(explanation),
                    "stored_decisions": stored,
                }
            )
        )
        return
    runs = execution.run_count
    click.echo(
        f"execution {execution.execution_id}: job {execution.job_id or '-'}, "
        f"account {execution.account_alias or '-'}"
    )
    click.echo(
        f"status {execution.status} in run {execution.run_index + 1} of {runs}, "
        f"first failure {_when(execution.first_failure_at)}"
    )
    if not failed:
        click.echo(
            f"not failed: respawn decides nothing for a {execution.status} execution; "
            "below is what the policy would do with it (not_failed)"
        )
    click.echo(f"policy {source}, version {policy.version_hash}")
    click.echo(f"as of {_when(now)}: budgets, host history and the breaker as they are now")
    click.echo("")
    click.echo(format_explanation(explanation))
    click.echo("")
    if not stored:
        click.echo("stored decisions: none")
        return
    click.echo("stored decisions (to compare):")
    for row in stored:
        click.echo(
            f"  run {row['run'] + 1}  {_when(row['at'])}  {row['origin']}  {row['action']}  "
            f"rule {row['rule']}  {row['reason_code']}  policy {row['policy_version']}"
        )
        click.echo(f"      {row['reason']}")


def _decision_row(row: Decision) -> dict[str, Any]:
    return {
        "run": row.run_index,
        "at": row.created_at,
        "origin": row.origin,
        "action": row.action,
        "hosts": list(row.hosts or []),
        "rule": row.rule,
        "reason_code": row.reason_code,
        "reason": row.reason,
        "policy_version": row.policy_version,
        "actor": row.actor,
    }


def _decision_dict(decision: PolicyDecision) -> dict[str, Any]:
    return {
        "action": decision.action,
        "hosts": list(decision.hosts),
        "excluded_hosts": [dataclasses.asdict(e) for e in decision.excluded_hosts],
        "due_at": decision.due_at,
        "backoff_seconds": decision.backoff_seconds,
        "rule": decision.rule,
        "reason_code": decision.reason_code,
        "reason": decision.reason,
        "policy_version": decision.policy_version,
        "attempt": decision.attempt,
    }


def _explanation_dict(explanation: Explanation) -> dict[str, Any]:
    return {
        "decision": _decision_dict(explanation.decision),
        "rules": [
            {"rule": t.rule, "matched": t.matched, "reasons": list(t.reasons)}
            for t in explanation.traces
        ],
        "checks": [dataclasses.asdict(c) for c in explanation.checks],
    }


# --- backtest -----------------------------------------------------------------------------------


@policy_group.command("backtest")
@click.option(
    "--policy", "policy_file", type=POLICY_FILE, required=True, help="the candidate policy file"
)
@click.option(
    "--since",
    default="30d",
    metavar="DURATION",
    show_default=True,
    callback=positive_duration,
    help="replay the failures decided within this long before now (30s, 10m, 6h, 30d)",
)
@click.option("--json", "as_json", is_flag=True, help="print JSON")
def backtest_command(policy_file: Path, since: dt.timedelta, as_json: bool) -> None:
    """Replay the stored failures under a candidate policy.

    Compares with what was decided at the time: for each policy the restarts, the skips by
    reason, the restarts per job and per host, which budgets, quarantines and breaker trips
    would have stopped restarts, and sample differences. Exits 1 if the candidate is invalid
    (file:line: message).
    See docs/policy.md, "Backtesting".
    """
    candidate = _load_or_fail(policy_file)
    now = utcnow()
    with runtime_from_env() as runtime:
        report = backtest.run_backtest(
            runtime.transaction, candidate, now - since, now, batch_size=backtest.BATCH_SIZE
        )
    if as_json:
        click.echo(_json({"candidate_source": candidate.source, **dataclasses.asdict(report)}))
        return
    for line in _report_lines(report, candidate.source, since):
        click.echo(line)


def _report_lines(report: BacktestReport, source: str, since: dt.timedelta) -> list[str]:
    current, candidate = report.current, report.candidate
    versions = ", ".join(f"{v} ({n})" for v, n in report.current_versions.items()) or "none"
    lines = [
        f"backtest of {source} (version {report.candidate_version})",
        f"period: {_when(report.since)} .. {_when(report.until)} ({format_duration(since)}); "
        f"windows warmed up from {_when(report.warm_up_from)}",
        f"current: the stored decisions, by policy version {versions}",
        "",
        f"failed runs decided:            {report.failed_runs}",
        f"  replayed under the candidate: {report.replayed}",
        f"  would not have happened:      {report.not_reached} (the candidate did not restart "
        f"the run before; the current policy restarted {report.not_reached_restarted} of them)",
        f"decisions that differ:          {report.differ} ({report.action_differs} in action)",
        "",
        f"{'':32}{'current':>10}{'candidate':>11}",
        f"{'restarts':32}{current.restarts:>10}{candidate.restarts:>11}",
        f"{'skips':32}{sum(current.skips.values()):>10}{sum(candidate.skips.values()):>11}",
    ]

    def rows(title: str, left: dict[str, int], right: dict[str, int]) -> None:
        lines.append(title)
        keys = sorted({*left, *right}, key=lambda k: (-max(left.get(k, 0), right.get(k, 0)), k))
        if not keys:
            lines.append("  (none)")
        for key in keys:
            lines.append(f"  {key:30}{left.get(key, 0):>10}{right.get(key, 0):>11}")

    def tallies(title: str, found: tuple[Tally, ...]) -> None:
        rows(title, {t.key: t.current for t in found}, {t.key: t.candidate for t in found})

    lines.append(f"{'held (signature breaker open)':32}{current.held:>10}{candidate.held:>11}")
    lines.append(f"{'deferred (blackout)':32}{current.deferred:>10}{candidate.deferred:>11}")
    lines.append(
        f"restarts saved by the candidate: {report.saved} (restarted then; held, or skipped as "
        "systemic or for a blackout, under the candidate)"
    )
    rows("skips by reason", current.skips, candidate.skips)
    rows("tripped (failures skipped by)", current.trips, candidate.trips)
    lines.append(
        f"{'hosts left out by quarantine':32}{current.quarantined_hosts:>10}"
        f"{candidate.quarantined_hosts:>11}"
    )
    tallies("restarts per job (top 10 of each)", report.per_job)
    tallies("restarts per host (top 10 of each)", report.per_host)
    lines.append("")
    if not report.samples:
        lines.append("sample differences: none")
        return lines
    lines.append(f"sample differences (first {len(report.samples)} of {report.differ}):")

    def verdict(label: str, v: Verdict) -> str:
        hosts = f" [{', '.join(v.hosts)}]" if v.hosts else ""
        return f"    {label} {v.action}{hosts} by {v.rule} ({v.reason_code}): {v.reason}"

    for found in report.samples:
        run = found.run_index + 1  # counted from 1, as the admin UI does
        lines.append(f"  {_when(found.at)}  {found.execution_id} run {run}  job {found.job_id}")
        lines.append(verdict("current:  ", found.current))
        lines.append(verdict("candidate:", found.candidate))
    return lines
