"""Manual restart, cancel and pause through the JSON API; the OpenAPI document."""

from __future__ import annotations

import json
import re
import time
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.conftest import CALLBACK_TOKEN
from tests.feed import EXECUTION_ID, failing_run_events

T0 = int(time.time() * 1000) - 60_000


@pytest.fixture
def failed(make_app: Any, policy_file: Any) -> FlaskClient:
    """An execution failed on web2 and web3; the policy skips, so nothing is pending."""
    policy_file.write_text("version: 1\ndefaults: {action: skip}\n")
    client: FlaskClient = make_app().test_client()
    response = client.post(
        f"/callbacks/{CALLBACK_TOKEN}",
        data=json.dumps(failing_run_events(T0)),
        content_type="application/json",
    )
    assert response.status_code == 202
    return client


def restart(
    client: FlaskClient, headers: dict[str, str], body: Any = None, execution_id: str = EXECUTION_ID
) -> Any:
    kwargs: dict[str, Any] = {"headers": headers}
    if body is not None:
        kwargs["json"] = body
    return client.post(f"/api/v1/executions/{execution_id}/restart", **kwargs)


def test_manual_restart_of_chosen_hosts(failed: FlaskClient, api_headers: dict[str, str]) -> None:
    response = restart(failed, api_headers, {"hosts": ["web3"], "reason": "checked the switch"})

    assert response.status_code == 202
    body = response.get_json()
    assert body["decision"]["origin"] == "manual"
    assert body["decision"]["hosts"] == ["web3"]
    assert body["decision"]["actor"].startswith("api:")
    assert "checked the switch" in body["decision"]["reason"]
    assert body["restart"]["state"] == "pending" and body["restart"]["manual"] is True
    detail = failed.get(f"/api/v1/executions/{EXECUTION_ID}", headers=api_headers).get_json()
    assert [d["origin"] for d in detail["decisions"]] == ["policy", "manual"]


def test_manual_restart_defaults_to_every_failed_host(
    failed: FlaskClient, api_headers: dict[str, str]
) -> None:
    body = restart(failed, api_headers).get_json()

    assert sorted(body["decision"]["hosts"]) == ["web2", "web3"]


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"hosts": ["web1"]}, 422, "invalid"),
        ({"hosts": "web2"}, 422, "invalid"),
        ({"hosts": [""]}, 422, "invalid"),
        ([1, 2], 422, "invalid"),
    ],
)
def test_manual_restart_bad_input(
    failed: FlaskClient, api_headers: dict[str, str], body: Any, status: int, code: str
) -> None:
    response = restart(failed, api_headers, body)

    assert response.status_code == status
    assert response.get_json()["error"] == code


def test_manual_restart_not_json_is_415(failed: FlaskClient, api_headers: dict[str, str]) -> None:
    response = failed.post(
        f"/api/v1/executions/{EXECUTION_ID}/restart",
        data="hosts=web2",
        content_type="text/plain",
        headers=api_headers,
    )

    assert response.status_code == 415


def test_second_manual_restart_while_pending_is_409(
    failed: FlaskClient, api_headers: dict[str, str]
) -> None:
    assert restart(failed, api_headers).status_code == 202

    again = restart(failed, api_headers)

    assert again.status_code == 409
    assert again.get_json()["error"] == "restart_pending"


def test_restart_of_unknown_or_healthy_execution(
    client: FlaskClient, api_headers: dict[str, str]
) -> None:
    assert restart(client, api_headers, execution_id="nope").status_code == 404
    client.post(f"/callbacks/{CALLBACK_TOKEN}", json={"execution_id": "ok-1", "status": "SUCCESS"})

    response = restart(client, api_headers, execution_id="ok-1")

    assert response.status_code == 409
    assert response.get_json()["error"] == "not_failed"


def test_cancel_pending_restart(failed: FlaskClient, api_headers: dict[str, str]) -> None:
    restart_id = restart(failed, api_headers).get_json()["restart"]["id"]

    cancelled = failed.post(f"/api/v1/restarts/{restart_id}/cancel", headers=api_headers)
    again = failed.post(f"/api/v1/restarts/{restart_id}/cancel", headers=api_headers)

    assert cancelled.status_code == 200
    assert cancelled.get_json()["state"] == "cancelled"
    assert again.status_code == 409
    assert failed.post("/api/v1/restarts/999/cancel", headers=api_headers).status_code == 404
    assert restart(failed, api_headers).status_code == 202


def test_pause_and_resume(app: Flask, client: FlaskClient, api_headers: dict[str, str]) -> None:
    assert (
        client.put(
            "/api/v1/pauses/global", headers=api_headers, json={"reason": "maintenance"}
        ).status_code
        == 200
    )
    assert client.put("/api/v1/pauses/jobs/job-9", headers=api_headers).status_code == 200

    items = client.get("/api/v1/pauses", headers=api_headers).get_json()["items"]

    assert [(i["scope"], i["job_id"]) for i in items] == [("global", None), ("job", "job-9")]
    assert client.delete("/api/v1/pauses/global", headers=api_headers).status_code == 200
    assert client.delete("/api/v1/pauses/global", headers=api_headers).status_code == 404
    assert (
        client.put("/api/v1/pauses/global", headers=api_headers, json={"reason": 5}).status_code
        == 422
    )


def test_a_job_named_global_is_paused_alone(
    client: FlaskClient, api_headers: dict[str, str]
) -> None:
    """`/pauses/jobs/global` is the job named "global", not the global pause, and is not
    redirected to it (a 308 that a client follows would pause every job)."""
    paused = client.put("/api/v1/pauses/jobs/global", headers=api_headers)

    assert paused.status_code == 200
    assert paused.get_json() == {"paused": True, "scope": "global"}
    items = client.get("/api/v1/pauses", headers=api_headers).get_json()["items"]
    assert [(i["scope"], i["job_id"]) for i in items] == [("job", "global")]
    assert client.delete("/api/v1/pauses/global", headers=api_headers).status_code == 404
    resumed = client.delete("/api/v1/pauses/jobs/global", headers=api_headers)
    assert resumed.status_code == 200
    assert client.get("/api/v1/pauses", headers=api_headers).get_json()["items"] == []


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        # Text no database stores: refused as malformed, never a 500 on PostgreSQL.
        ("put", "/api/v1/pauses/global", '{"reason": "a\\u0000b"}', 400),
        ("put", "/api/v1/pauses/global", '{"reason": "\\ud800"}', 400),
        ("post", f"/api/v1/executions/{EXECUTION_ID}/restart", '{"hosts": ["w\\u0000"]}', 400),
        ("post", f"/api/v1/executions/{EXECUTION_ID}/restart", '{"reason": "\\udfff"}', 400),
        # A filter with a NUL is invalid; an id with a control character names nothing.
        ("get", "/api/v1/executions?account=a%00b", None, 422),
        ("get", "/api/v1/executions?host=%00", None, 422),
        ("put", "/api/v1/pauses/jobs/job%00", "{}", 404),
        ("get", "/api/v1/executions/exec%1F1", None, 404),
        ("get", "/api/v1/signatures/k%00", None, 404),
    ],
)
def test_text_no_database_stores_is_refused(
    failed: FlaskClient,
    api_headers: dict[str, str],
    method: str,
    path: str,
    body: str | None,
    status: int,
) -> None:
    kwargs: dict[str, Any] = {"headers": api_headers}
    if body is not None:
        kwargs.update(data=body, content_type="application/json")

    response = getattr(failed, method)(path, **kwargs)

    assert response.status_code == status
    assert set(response.get_json()) == {"error", "message", "fields"}
    assert failed.get("/api/v1/pauses", headers=api_headers).get_json() == {"items": []}


def test_actions_need_a_token(failed: FlaskClient) -> None:
    assert failed.post(f"/api/v1/executions/{EXECUTION_ID}/restart").status_code == 401
    assert failed.put("/api/v1/pauses/global").status_code == 401


def test_openapi_covers_every_route(app: Flask, client: FlaskClient) -> None:
    document = client.get("/api/v1/openapi.json").get_json()

    assert document["openapi"].startswith("3.")
    paths = document["paths"]
    for rule in app.url_map.iter_rules():
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", str(rule))
        if path.startswith(("/api/", "/callbacks/", "/healthz", "/readyz", "/metrics")):
            assert path in paths, path
            for method in rule.methods - {"HEAD", "OPTIONS"}:
                assert method.lower() in paths[path], (path, method)
