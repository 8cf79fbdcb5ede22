"""What the real Runner may send that its docs do not promise (docs/runner.md): an `expired`
status, statuses respawn does not know, the `[0]` placeholder, timestamps in seconds."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from app.models import Decision, HostFailure
from tests.conftest import CALLBACK_TOKEN
from tests.feed import event, failing_run_events
from tests.helpers import save_user, sign_in, transaction

URL = f"/callbacks/{CALLBACK_TOKEN}"
NOW_MS = int(time.time() * 1000)


def post(client: FlaskClient, body: Any) -> None:
    response = client.post(URL, data=json.dumps(body), content_type="application/json")
    assert response.status_code == 202, response.get_json()


def document(execution_id: str, status: str, **extra: Any) -> dict[str, Any]:
    return {
        "execution_id": execution_id,
        "job_id": "job-1",
        "account_alias": "XXXX",
        "status": status,
        "timers": [{"start": NOW_MS - 60_000, "end": NOW_MS - 1000}],
        "failed_hosts": [],
        **extra,
    }


def detail(client: FlaskClient, headers: dict[str, str], execution_id: str) -> Any:
    return client.get(f"/api/v1/executions/{execution_id}", headers=headers).get_json()


def decisions(app: Flask) -> int:
    with transaction(app) as session:
        return session.scalar(select(func.count()).select_from(Decision)) or 0


@pytest.mark.parametrize("spelling", ["EXPIRED", "expired", "Expired"])
def test_expired_in_any_case_is_a_final_status_and_no_failure(
    client: FlaskClient, app: Flask, api_headers: dict[str, str], spelling: str
) -> None:
    post(client, document("exec-expired", spelling))
    post(client, event("runner_on_ok", NOW_MS - 30_000, "web1", execution_id="exec-expired"))

    body = detail(client, api_headers, "exec-expired")
    assert body["status"] == "EXPIRED"  # an earlier event does not move it back
    assert body["timers"][0]["status"] == "EXPIRED"
    assert decisions(app) == 0
    listed = client.get("/api/v1/executions?status=expired", headers=api_headers).get_json()
    assert [e["execution_id"] for e in listed["items"]] == ["exec-expired"]


def test_an_unknown_status_is_stored_as_given_shown_as_unknown_never_a_failure(
    client: FlaskClient, app: Flask, api_headers: dict[str, str]
) -> None:
    post(client, document("exec-new-status", "quarantined_by_ops", failed_hosts=["web1"]))

    body = detail(client, api_headers, "exec-new-status")
    assert body["status"] == "QUARANTINED_BY_OPS"
    assert decisions(app) == 0
    # A later known final status still wins; an earlier running one does not move it back.
    post(client, document("exec-new-status", "FAILURE", failed_hosts=["web1"]))
    assert detail(client, api_headers, "exec-new-status")["status"] == "FAILURE"
    assert decisions(app) == 1

    post(client, document("exec-shown", "PARKED"))
    save_user(app, "olivia", "operator", "correct horse battery")
    sign_in(client, "olivia", "correct horse battery")
    page = client.get("/admin/").get_data(as_text=True)
    assert "unknown: parked" in page
    detail_page = client.get("/admin/executions/exec-shown").get_data(as_text=True)
    assert "unknown: parked" in detail_page


def test_the_failed_hosts_placeholder_is_no_host(
    client: FlaskClient, app: Flask, api_headers: dict[str, str]
) -> None:
    post(client, failing_run_events(NOW_MS - 120_000, execution_id="exec-placeholder"))
    # A restart answer as published: PENDING, earlier timers kept, `failed_hosts: [0]`.
    answer = document("exec-placeholder", "PENDING", failed_hosts=[0])
    answer["timers"] = [{"start": NOW_MS - 120_000, "end": NOW_MS - 119_000}]
    post(client, answer)
    for status in ("STOPPING", "KILLING"):
        post(client, document(f"exec-{status.lower()}", status, failed_hosts=[0]))

    with transaction(app) as session:
        hosts = set(session.scalars(select(HostFailure.host)))
    assert hosts == {"web2", "web3"}
    by_host = client.get("/api/v1/executions?host=0", headers=api_headers).get_json()
    assert by_host["items"] == []


def test_timestamps_in_seconds_land_in_the_right_run(
    client: FlaskClient, api_headers: dict[str, str]
) -> None:
    start_s = NOW_MS // 1000 - 600
    first = failing_run_events(start_s * 1000, execution_id="exec-seconds", prefix="r1")
    post(client, first)
    # The second run's events, stamped in seconds (with a fraction), after a restart.
    second = failing_run_events((start_s + 300) * 1000, failing=(), execution_id="exec-seconds",
                                prefix="r2")  # fmt: skip
    for item in second:
        item["timestamp"] = item["timestamp"] / 1000
    post(client, second)

    body = detail(client, api_headers, "exec-seconds")
    assert [t["status"] for t in body["timers"]] == ["FAILURE", "SUCCESS"]
    assert body["status"] == "SUCCESS" and body["run_count"] == 2
    assert body["timers"][1]["start"] == (start_s + 300) * 1000  # milliseconds again
