"""Hosts a partial restart left failed (docs/policy.md, "Which hosts are restarted").

A restart that names hosts re-runs the playbook on those hosts only. A host that failed and
was left out of every restart since stays failed, even when the execution's newest run
succeeds: that run never touched it. These are the hosts an operator must look at by hand.

Only restarts respawn made are known to name hosts: a run started any other way (a restart
from elsewhere, a restart with no host list) is taken to have run every host, so nothing is
claimed that the record cannot show.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import Decision, Execution, HostFailure, Restart, RestartState

RESTARTED = "restarted"
"""The outcome of a restart call the Runner carried out (`app.core.outbox`)."""


@dataclass(frozen=True)
class LeftFailed:
    host: str
    run_index: int
    """The last run it failed in (0-based)."""
    failure_class: str
    message: str | None
    reason: str
    """Why the restart after that run left it out."""


def left_failed(
    execution: Execution,
    failures: Iterable[HostFailure],
    restarts: Sequence[Restart],
    decisions: Sequence[Decision],
) -> list[LeftFailed]:
    """The hosts that failed in an earlier run and that no later run included, by host."""
    latest = execution.run_index
    named: dict[int, Restart] = {
        restart.run_index: restart
        for restart in restarts
        if restart.state == RestartState.DONE
        and restart.outcome == RESTARTED
        and restart.hosts
        and restart.run_index < latest
    }
    if not named:
        return []
    last: dict[str, HostFailure] = {}
    for failure in failures:
        if failure.host not in last or failure.run_index >= last[failure.host].run_index:
            last[failure.host] = failure
    excluded = _exclusions(decisions)
    found = []
    for host, failure in sorted(last.items()):
        later = range(failure.run_index, latest)
        if failure.run_index >= latest or any(
            run not in named or host in named[run].hosts for run in later
        ):
            continue
        restart = named[failure.run_index]
        reason = excluded.get((restart.decision_id, host)) or (
            f"not named by the restart after run {failure.run_index + 1}"
        )
        found.append(
            LeftFailed(host, failure.run_index, failure.failure_class, failure.message, reason)
        )
    return found


def _exclusions(decisions: Iterable[Decision]) -> dict[tuple[int, str], str]:
    return {
        (decision.id, str(entry.get("host"))): str(entry.get("reason") or "")
        for decision in decisions
        for entry in decision.excluded_hosts or ()
        if isinstance(entry, dict)
    }


def left_failed_by_execution(
    session: Session, executions: Sequence[Execution]
) -> dict[int, list[LeftFailed]]:
    """`left_failed` for a page of executions, in three statements; only those with a
    partial restart behind their newest run are looked at."""
    candidates = {e.id: e for e in executions if e.run_index > 0 and e.restart_count > 0}
    if not candidates:
        return {}
    restarts: dict[int, list[Restart]] = {}
    for restart in session.scalars(
        select(Restart).where(
            Restart.execution_pk.in_(list(candidates)),
            Restart.state == RestartState.DONE,
            Restart.outcome == RESTARTED,
        )
    ):
        if restart.hosts:
            restarts.setdefault(restart.execution_pk, []).append(restart)
    if not restarts:
        return {}
    failures: dict[int, list[HostFailure]] = {}
    for failure in session.scalars(
        select(HostFailure).where(HostFailure.execution_pk.in_(list(restarts)))
    ):
        failures.setdefault(failure.execution_pk, []).append(failure)
    decision_ids = [r.decision_id for rows in restarts.values() for r in rows]
    decisions: dict[int, list[Decision]] = {}
    for decision in session.scalars(select(Decision).where(Decision.id.in_(decision_ids))):
        decisions.setdefault(decision.execution_pk, []).append(decision)
    found = {
        pk: left_failed(candidates[pk], failures.get(pk, ()), rows, decisions.get(pk, []))
        for pk, rows in restarts.items()
    }
    return {pk: hosts for pk, hosts in found.items() if hosts}
