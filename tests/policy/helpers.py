"""Builders shared by the policy tests."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from app.policy import DecisionInput, HostFailure, Policy, parse_policy

NOW = datetime(2024, 5, 1, 14, 0, 0, tzinfo=UTC)


def policy(body: str = "") -> Policy:
    """A policy from YAML lines appended after `version: 1`."""
    return parse_policy("version: 1\n" + body)


def host(
    name: str = "web1",
    failure_class: str = "task_failed",
    message: str = "",
    changed: int | None = 0,
) -> HostFailure:
    return HostFailure(name, failure_class, message, changed)


def make_input(
    *,
    hosts: tuple[HostFailure, ...] | None = None,
    history: Mapping[str, tuple[datetime, ...]] | None = None,
    now: datetime = NOW,
    first_failure_at: datetime | None = None,
    **fields: Any,
) -> DecisionInput:
    values: dict[str, Any] = {
        "execution_id": "44fdcfa2-0000-4000-8000-000000000001",
        "account": "ACME",
        "job_id": "1111505e-0000-4000-8000-000000000001",
        "job_description": "deploy web",
        "status": "FAILURE",
        "run_index": 0,
        "run_count": 1,
        "first_failure_at": first_failure_at or now,
        "now": now,
        "failed_hosts": (host(),) if hosts is None else hosts,
    }
    if history is not None:
        values["host_failure_times"] = history
    values.update(fields)
    return DecisionInput(**values)


def minutes(n: float) -> timedelta:
    return timedelta(minutes=n)
