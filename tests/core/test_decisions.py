"""Decisions made through `/callbacks`, stored with rule, reason and policy version."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from app.models import Decision, Restart
from tests.conftest import CALLBACK_TOKEN
from tests.feed import EXECUTION_ID, event, failing_run_events
from tests.helpers import transaction

URL = f"/callbacks/{CALLBACK_TOKEN}"
# Recent, so the policy's deadline (measured from the first failure) has not passed.
T0 = int(time.time() * 1000) - 60_000


def post(client: FlaskClient, body: Any) -> None:
    response = client.post(URL, data=json.dumps(body), content_type="application/json")
    assert response.status_code == 202, response.get_json()


def decisions(
    client: FlaskClient, headers: dict[str, str], execution_id: str = EXECUTION_ID
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    body = client.get(f"/api/v1/executions/{execution_id}", headers=headers).get_json()
    return body["decisions"], body["restarts"]


POLICY = """
version: 1
defaults:
  backoff: {initial: 0s}
rules:
  - name: no-db-migrations
    when: {job: "db-migrate*"}
    action: skip
  - name: flaky-network
    when:
      failure: [unreachable]
      message: "(?i)timed out|connection refused"
    max_restarts: 5
    backoff: {initial: 60s, jitter: 0}
  - name: init
    when: {status: [INIT_FAILURE]}
    hosts: none
  - name: web-only
    when: {host: "web*", account: "WEBS"}
    action: restart
  - name: careful
    when: {job: "careful-*"}
    require_unchanged: true
"""


def unreachable_run(job_id: str = "job-1", account: str = "XXXX") -> list[dict[str, Any]]:
    return failing_run_events(T0, failing=("web3",), job_id=job_id, account=account)


def task_failed_run(
    job_id: str = "job-1", account: str = "XXXX", changed: bool = False
) -> list[dict[str, Any]]:
    events = failing_run_events(T0, failing=("web2",), job_id=job_id, account=account)
    if changed:
        for item in events:
            if item["event_type"] == "runner_on_failed":
                item["message"]["changed"] = True
    return events


def init_failure(job_id: str = "job-1", account: str = "XXXX") -> list[dict[str, Any]]:
    return [
        {
            "execution_id": EXECUTION_ID,
            "job_id": job_id,
            "account_alias": account,
            "status": "INIT_FAILURE",
            "timers": [{"start": T0, "end": T0 + 2}],
            "failed_hosts": [],
        }
    ]


CASES = [
    # (feed, action, rule, reason_code, hosts, backoff)
    (unreachable_run(job_id="db-migrate-users"), "skip", "no-db-migrations", "rule_skip", [], None),
    (unreachable_run(), "restart", "flaky-network", "restart", ["web3"], 60.0),
    (task_failed_run(), "restart", "defaults", "restart", ["web2"], 0.0),
    (init_failure(), "restart", "init", "restart", [], 0.0),
    (task_failed_run(account="WEBS"), "restart", "web-only", "restart", ["web2"], 0.0),
    (
        task_failed_run(job_id="careful-1", changed=True),
        "skip",
        "careful",
        "unsafe_changed",
        [],
        None,
    ),
    (task_failed_run(job_id="careful-1"), "restart", "careful", "restart", ["web2"], 0.0),
]


@pytest.mark.parametrize(
    ("feed", "action", "rule", "reason_code", "hosts", "backoff"),
    CASES,
    ids=[
        "skip-rule",
        "flaky-network",
        "defaults",
        "init-failure",
        "host-glob",
        "unsafe-changed",
        "unchanged-ok",
    ],
)
def test_failure_stores_the_expected_decision(
    make_app: Callable[..., Flask],
    policy_file: Path,
    api_headers: dict[str, str],
    feed: list[dict[str, Any]],
    action: str,
    rule: str,
    reason_code: str,
    hosts: list[str],
    backoff: float | None,
) -> None:
    policy_file.write_text(POLICY)
    client = make_app().test_client()

    post(client, feed)

    (decision,), restarts = decisions(client, api_headers)
    assert (decision["action"], decision["rule"], decision["reason_code"]) == (
        action,
        rule,
        reason_code,
    )
    assert decision["hosts"] == hosts
    assert decision["backoff_seconds"] == backoff
    assert decision["reason"]
    assert len(decision["policy_version"]) >= 8
    if action == "restart":
        (restart,) = restarts
        assert restart["state"] == "pending"
        assert restart["hosts"] == hosts
        assert restart["due_at"] == decision["due_at"]
    else:
        assert restarts == []


def test_duplicates_and_late_events_never_decide_twice(
    app: Flask, client: FlaskClient, api_headers: dict[str, str]
) -> None:
    events = failing_run_events(T0)
    result_doc = {
        "execution_id": EXECUTION_ID,
        "status": "FAILURE",
        "timers": [{"start": T0, "end": T0 + 1_000}],
        "failed_hosts": ["web2", "web3"],
    }

    post(client, events)
    post(client, events)
    post(client, list(reversed(events)))
    post(client, result_doc)
    post(client, event("runner_on_failed", T0 + 400, "web1", event_id="late"))

    with transaction(app) as session:
        assert session.scalar(select(func.count()).select_from(Decision)) == 1
        assert session.scalar(select(func.count()).select_from(Restart)) == 1


def test_each_failed_run_gets_its_own_decision(
    client: FlaskClient, api_headers: dict[str, str]
) -> None:
    post(client, failing_run_events(T0))
    post(client, failing_run_events(T0 + 100_000, failing=("web2",), prefix="b"))

    found, restarts = decisions(client, api_headers)
    assert [(d["run"], d["action"]) for d in found] == [(0, "restart"), (1, "restart")]
    assert [r["hosts"] for r in restarts] == [["web2", "web3"], ["web2"]]


def test_max_restarts_counts_earlier_restarts(
    make_app: Callable[..., Flask], policy_file: Path, api_headers: dict[str, str]
) -> None:
    policy_file.write_text("version: 1\ndefaults: {max_restarts: 1, backoff: {initial: 0s}}\n")
    client = make_app().test_client()

    post(client, failing_run_events(T0))
    post(client, failing_run_events(T0 + 100_000, prefix="b"))

    found, _ = decisions(client, api_headers)
    assert [d["reason_code"] for d in found] == ["restart", "max_restarts"]


def test_paused_job_is_skipped_with_reason(
    app: Flask, client: FlaskClient, api_headers: dict[str, str]
) -> None:
    from app.core.operator import pause_automatic
    from app.db import utcnow

    with transaction(app) as session:
        pause_automatic(session, None, "alice", utcnow())

    post(client, failing_run_events(T0))

    (decision,), restarts = decisions(client, api_headers)
    assert decision["reason_code"] == "paused"
    assert "alice" in decision["reason"]
    assert restarts == []


def test_per_job_budget_is_shared_across_executions(
    make_app: Callable[..., Flask], policy_file: Path, api_headers: dict[str, str]
) -> None:
    policy_file.write_text(
        "version: 1\ndefaults: {backoff: {initial: 0s}}\n"
        "limits: {per_job: {restarts: 2, window: 1h}}\n"
    )
    client = make_app().test_client()

    for n in range(3):
        post(client, failing_run_events(T0, execution_id=f"exec-{n}", prefix=f"p{n}"))

    codes = [decisions(client, api_headers, f"exec-{n}")[0][0]["reason_code"] for n in range(3)]
    assert codes == ["restart", "restart", "budget_per_job"]


def test_invalid_policy_edit_keeps_the_last_good_one(
    make_app: Callable[..., Flask], policy_file: Path, api_headers: dict[str, str]
) -> None:
    policy_file.write_text("version: 1\ndefaults: {action: skip}\n")
    app = make_app()
    client = app.test_client()
    policy_file.write_text("version: 1\ndefaults: {action: explode}\n")

    post(client, failing_run_events(T0))

    (decision,), _ = decisions(client, api_headers)
    assert decision["reason_code"] == "rule_skip"
    ready = client.get("/readyz").get_json()
    assert ready["checks"]["policy"]["state"] == "stale"
    assert any("policy.yaml:2" in line for line in ready["checks"]["policy"]["rejected"])
