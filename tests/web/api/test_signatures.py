"""Error signatures and blackouts through HTTP, on SQLite and PostgreSQL: the open signatures
listed with their held restarts, closed by hand (audited, released at once), an active
blackout on /readyz and /metrics and the policy page."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from app.models import AuditEntry, Restart
from tests.conftest import CALLBACK_TOKEN
from tests.feed import GIT_ERROR, SIGNATURE_POLICY, run_events
from tests.helpers import save_user, sign_in, transaction


def around_now() -> str:
    """A daily window from an hour ago to an hour from now (UTC): active now."""
    now = dt.datetime.now(dt.UTC)
    start = (now - dt.timedelta(hours=1)).strftime("%H:%M")
    end = (now + dt.timedelta(hours=1)).strftime("%H:%M")
    return (
        "schedule:\n  blackouts:\n"
        f'    - {{name: change-freeze, from: "{start}", to: "{end}", tz: UTC}}\n'
    )


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(SIGNATURE_POLICY)
    return path


def burst(client: FlaskClient, count: int) -> None:
    start = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=30 * count)
    for n in range(count):
        at = start + dt.timedelta(seconds=30 * n)
        items = run_events(
            f"exec-git-{n}", f"job-{n % 4}", at, {f"web{n}": GIT_ERROR.format(n=n, ms=n)}
        )
        response = client.post(
            f"/callbacks/{CALLBACK_TOKEN}", data=json.dumps(items), content_type="application/json"
        )
        assert response.status_code == 202


def test_open_signatures_are_listed_with_their_held_restarts(
    client: FlaskClient, api_headers: dict[str, str]
) -> None:
    burst(client, 6)

    listed = client.get("/api/v1/signatures", headers=api_headers).get_json()["items"]
    detail = client.get("/api/v1/executions/exec-git-5", headers=api_headers).get_json()

    (signature,) = listed
    assert signature["open"] is True
    assert (signature["executions"], signature["held"]) == (6, 6)
    assert signature["jobs"] == ["job-0", "job-1", "job-2", "job-3"]
    assert signature["failure_class"] == "task_failed"
    assert signature["lookback_s"] == 25 * 60  # window 10m + cool_down 15m
    assert dt.datetime.fromisoformat(signature["until"]) > dt.datetime.now(dt.UTC)
    (decision,) = detail["decisions"]
    assert (decision["action"], decision["reason_code"]) == ("held", "signature_open")
    assert decision["signature"] == signature["key"]
    assert detail["restarts"][0]["state"] == "held"
    shown = client.get(f"/api/v1/signatures/{signature['key']}", headers=api_headers)
    assert shown.get_json()["text"] == signature["text"]


def test_closing_a_signature_releases_its_restarts_and_is_audited(
    app: Flask, client: FlaskClient, api_headers: dict[str, str]
) -> None:
    burst(client, 5)
    (signature,) = client.get("/api/v1/signatures", headers=api_headers).get_json()["items"]

    closed = client.post(f"/api/v1/signatures/{signature['key']}/close", headers=api_headers)

    body = closed.get_json()
    assert closed.status_code == 200
    assert (body["open"], body["released"], body["dropped"]) == (False, 5, 0)
    assert client.get("/api/v1/signatures", headers=api_headers).get_json()["items"] == []
    with transaction(app) as session:
        assert {r.state for r in session.scalars(select(Restart))} == {"pending"}
        (audit,) = session.scalars(select(AuditEntry).where(AuditEntry.action == "close_signature"))
    assert audit.target == signature["key"] and audit.actor.startswith("api:")


def test_without_a_signature_breaker_sightings_are_still_counted(
    make_app: Any, policy_file: Path, api_headers: dict[str, str]
) -> None:
    # The breaker is off, yet the page and the API still say how often the failure was seen
    # lately (over the default breaker's 25 minutes), not "0 executions of 0 jobs".
    policy_file.write_text(SIGNATURE_POLICY.replace("  per_signature:", "  # per_signature:"))
    app = make_app()
    client = app.test_client()
    burst(client, 3)
    detail = client.get("/api/v1/executions/exec-git-2", headers=api_headers).get_json()
    key = detail["decisions"][0]["signature"]

    shown = client.get(f"/api/v1/signatures/{key}", headers=api_headers).get_json()
    save_user(app, "olivia", "operator", "a-long-test-password")
    sign_in(client, "olivia", "a-long-test-password")
    page = client.get("/admin/executions/exec-git-2").get_data(as_text=True)

    assert (shown["open"], shown["until"], shown["lookback_s"]) == (False, None, 25 * 60)
    assert (shown["executions"], shown["jobs"]) == (3, ["job-0", "job-1", "job-2"])
    assert "seen in 3 executions of 3 jobs in the last 25 min" in page
    assert "breaker open" not in page


@pytest.mark.parametrize("method", ["get", "post"])
def test_an_unknown_signature_is_404(
    client: FlaskClient, api_headers: dict[str, str], method: str
) -> None:
    path = "/api/v1/signatures/0123456789abcdef" + ("/close" if method == "post" else "")

    response = getattr(client, method)(path, headers=api_headers)

    assert response.status_code == 404
    assert response.get_json()["error"] == "not_found"


def test_signatures_need_a_token(client: FlaskClient) -> None:
    assert client.get("/api/v1/signatures").status_code == 401
    assert client.post("/api/v1/signatures/0123456789abcdef/close").status_code == 401


def test_the_overview_lists_open_signatures_and_an_operator_closes_one(
    app: Flask, client: FlaskClient
) -> None:
    burst(client, 5)
    save_user(app, "olivia", "operator", "a-long-test-password")
    sign_in(client, "olivia", "a-long-test-password")

    overview = client.get("/admin/overview").get_data(as_text=True)
    detail = client.get("/admin/executions/exec-git-4").get_data(as_text=True)

    assert 'data-test="signatures"' in overview and "task failed" in overview
    assert 'data-test="signature"' in detail and "breaker open" in detail
    link = overview.split('data-test="close-signature"')[0].rsplit('href="', 1)[1].split('"')[0]
    confirm = client.get(link).get_data(as_text=True)
    token = confirm.split('name="csrf_token" type="hidden" value="')[1].split('"')[0]
    done = client.post(link, data={"csrf_token": token})
    assert done.status_code == 302
    with transaction(app) as session:
        assert {r.state for r in session.scalars(select(Restart))} == {"pending"}


def test_an_active_blackout_shows_on_readyz_metrics_and_the_policy_page(
    make_app: Any, policy_file: Path
) -> None:
    policy_file.write_text(SIGNATURE_POLICY + around_now())
    app = make_app()
    client = app.test_client()

    ready = client.get("/readyz").get_json()
    metrics = client.get("/metrics").get_data(as_text=True)
    save_user(app, "olivia", "operator", "a-long-test-password")
    sign_in(client, "olivia", "a-long-test-password")
    page = client.get("/admin/policy").get_data(as_text=True)

    blackout = ready["checks"]["policy"]["blackout"]
    assert blackout["name"] == "change-freeze"
    assert dt.datetime.fromisoformat(blackout["until"]) > dt.datetime.now(dt.UTC)
    assert "respawn_blackout_active 1.0" in metrics
    assert 'data-test="blackout-active"' in page and "change-freeze" in page


def test_no_blackout_reads_as_none(client: FlaskClient) -> None:
    ready = client.get("/readyz").get_json()
    metrics = client.get("/metrics").get_data(as_text=True)

    assert ready["checks"]["policy"]["blackout"] is None
    assert "respawn_blackout_active 0.0" in metrics
