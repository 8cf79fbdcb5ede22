"""The read API: filters, keyset pagination, auth and argument errors."""

from __future__ import annotations

import json
from typing import Any

import pytest
from flask.testing import FlaskClient

from tests.conftest import CALLBACK_TOKEN
from tests.feed import failing_run_events

URL = f"/callbacks/{CALLBACK_TOKEN}"


def post(client: FlaskClient, body: Any) -> None:
    response = client.post(URL, data=json.dumps(body), content_type="application/json")
    assert response.status_code == 202, response.get_json()


def seed(client: FlaskClient) -> None:
    for n in range(7):
        account = "AAAA" if n % 2 else "BBBB"
        failing = ("web2",) if n < 4 else ()
        post(
            client,
            failing_run_events(
                1_700_000_000_000 + n * 10_000,
                failing=failing,
                prefix=f"x{n}",
                execution_id=f"exec-{n}",
                job_id=f"job-{n % 3}",
                account=account,
            ),
        )


def ids(response: Any) -> list[str]:
    assert response.status_code == 200, response.get_json()
    return [item["execution_id"] for item in response.get_json()["items"]]


def test_list_is_newest_activity_first_and_pages_by_keyset(
    client: FlaskClient, api_headers: dict[str, str]
) -> None:
    seed(client)
    post(
        client, {"execution_id": "exec-0", "status": "FAILURE", "timers": [{"start": 1, "end": 2}]}
    )

    seen: list[str] = []
    cursor = ""
    while True:
        response = client.get(f"/api/v1/executions?limit=3{cursor}", headers=api_headers)
        seen += ids(response)
        next_cursor = response.get_json()["next_cursor"]
        if not next_cursor:
            break
        cursor = f"&cursor={next_cursor}"

    assert seen[0] == "exec-0"
    assert sorted(seen) == [f"exec-{n}" for n in range(7)]
    assert len(seen) == 7


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("status=FAILURE", {"exec-0", "exec-1", "exec-2", "exec-3"}),
        ("status=success", {"exec-4", "exec-5", "exec-6"}),
        ("status=SUCCESS,FAILURE", {f"exec-{n}" for n in range(7)}),
        ("account=AAAA", {"exec-1", "exec-3", "exec-5"}),
        ("job=job-1", {"exec-1", "exec-4"}),
        ("host=web2", {"exec-0", "exec-1", "exec-2", "exec-3"}),
        ("host=web2&account=BBBB", {"exec-0", "exec-2"}),
        ("host=nowhere", set()),
        # values are bound parameters, never SQL: these match nothing and break nothing
        ("account=AAAA%27%20OR%20%271%27%3D%271", set()),
        ("job=job-1%22%3B%20DROP%20TABLE%20executions%3B--", set()),
        ("host=%25", set()),
        ("host=web_", set()),
    ],
)
def test_filters(
    client: FlaskClient, api_headers: dict[str, str], query: str, expected: set[str]
) -> None:
    seed(client)

    assert set(ids(client.get(f"/api/v1/executions?{query}", headers=api_headers))) == expected


@pytest.mark.parametrize(
    ("query", "status", "field"),
    [
        ("limit=0", 422, "limit"),
        ("limit=501", 422, "limit"),
        ("limit=ten", 422, "limit"),
        ("status=EXPLODED", 422, "status"),
        ("cursor=%%%", 400, "cursor"),
        ("cursor=WzFd", 400, "cursor"),
    ],
)
def test_bad_arguments(
    client: FlaskClient, api_headers: dict[str, str], query: str, status: int, field: str
) -> None:
    response = client.get(f"/api/v1/executions?{query}", headers=api_headers)

    assert response.status_code == status
    assert field in response.get_json()["fields"]


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong-token-value"}, {"Authorization": "Basic abc"}],
)
def test_api_needs_a_token(client: FlaskClient, headers: dict[str, str]) -> None:
    response = client.get("/api/v1/executions", headers=headers)

    assert response.status_code == 401
    assert response.get_json()["error"] == "unauthorized"


def test_unknown_execution_is_404(client: FlaskClient, api_headers: dict[str, str]) -> None:
    for path in ("/api/v1/executions/nope", "/api/v1/executions/nope/events"):
        response = client.get(path, headers=api_headers)
        assert response.status_code == 404
        assert response.get_json()["error"] == "not_found"


def test_health_and_readiness(client: FlaskClient) -> None:
    assert client.get("/healthz").get_json() == {"status": "ok"}
    ready = client.get("/readyz")
    body = ready.get_json()
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["migrations"]["current"] == body["checks"]["migrations"]["head"]


def test_metrics_are_exposed(client: FlaskClient) -> None:
    response = client.get("/metrics")

    assert response.status_code == 200
    assert b"respawn_callbacks_total" in response.data


def test_cursor_with_an_out_of_range_id_is_400(
    client: FlaskClient, api_headers: dict[str, str]
) -> None:
    from app.core.queries import encode_cursor

    seed(client)
    for path, cursor in (
        ("/api/v1/executions", encode_cursor("2026-01-01T00:00:00+00:00", 10**20)),
        ("/api/v1/executions/exec-1/events", encode_cursor(10**20)),
        ("/api/v1/executions/exec-1/events", encode_cursor(-1)),
    ):
        response = client.get(f"{path}?cursor={cursor}", headers=api_headers)
        assert response.status_code == 400, path
        assert "cursor" in response.get_json()["fields"]


def test_a_long_unknown_id_is_not_echoed_back_whole(
    client: FlaskClient, api_headers: dict[str, str]
) -> None:
    wanted = "e" * 5000

    answer = client.get(f"/api/v1/executions/{wanted}", headers=api_headers)

    body = answer.get_json()
    assert answer.status_code == 404 and body["error"] == "not_found"
    assert body["message"].startswith("no execution 'eeee") and body["message"].endswith("…'")
    assert len(body["message"]) < 100
