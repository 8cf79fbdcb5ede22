"""What the restart action offers for one execution: whether it applies, and each failed host
with its failure and whether the per-host limit holds it in quarantine (a manual restart may
still name it; automatic ones leave it out)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy.orm import Session

from app.core.queries import ExecutionDetail, execution_detail
from app.core.stats import QuarantinedHost, quarantined_hosts
from app.models import ACTIVE_RESTART_STATES, Execution
from app.policy import Policy
from app.runner.documents import FAILED_STATUSES


@dataclass(frozen=True)
class HostChoice:
    host: str
    failure_class: str | None
    message: str | None
    quarantine: QuarantinedHost | None = None
    """Set when the per-host limit holds this host now."""


@dataclass(frozen=True)
class RestartOption:
    """Whether the restart action applies, what it offers, or why not."""

    allowed: bool
    blocker: str | None
    hosts: list[HostChoice]


def quarantine_of(
    session: Session, policy: Policy | None, execution: Execution, now: dt.datetime
) -> dict[str, QuarantinedHost]:
    """Which of the execution's failed hosts the policy's per-host limit holds now."""
    limit = policy.limits.per_host if policy is not None else None
    if not execution.failed_hosts:
        return {}
    failed = set(execution.failed_hosts)
    return {q.host: q for q in quarantined_hosts(session, limit, now) if q.host in failed}


def restart_option(
    detail: ExecutionDetail, quarantine: Mapping[str, QuarantinedHost]
) -> RestartOption:
    execution = detail.execution
    current = {f.host: f for f in detail.failures if f.run_index == execution.run_index}
    hosts = [
        HostChoice(
            h,
            current[h].failure_class if h in current else None,
            current[h].message if h in current else None,
            quarantine.get(h),
        )
        for h in execution.failed_hosts
    ]
    if execution.status not in FAILED_STATUSES:
        why = f"The execution is {execution.status}; only a failed execution can be restarted."
        return RestartOption(False, why, hosts)
    if any(r.state in ACTIVE_RESTART_STATES for r in detail.restarts):
        why = "A restart of this execution is already pending; cancel it to restart differently."
        return RestartOption(False, why, hosts)
    return RestartOption(True, None, hosts)


def restart_target(
    session: Session, execution_id: str, policy: Policy | None, now: dt.datetime
) -> tuple[Execution, RestartOption]:
    """What the restart confirmation page needs."""
    detail = execution_detail(session, execution_id)
    quarantine = quarantine_of(session, policy, detail.execution, now)
    return detail.execution, restart_option(detail, quarantine)
