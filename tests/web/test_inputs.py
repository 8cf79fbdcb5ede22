"""Input that used to slip past validation, on SQLite and PostgreSQL (docs/security.md):
numbers that overflow, row ids past the database's integers, Runner ids that would step into
other paths, control characters that forge log lines or spoof host names."""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import Any

import flask
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from app.models import Decision, Event, Execution, Pause
from app.web.inputs import loads_strict, quote_segment
from tests.conftest import CALLBACK_TOKEN
from tests.feed import EXECUTION_ID, failing_run_events
from tests.helpers import save_user, sign_in, transaction

URL = f"/callbacks/{CALLBACK_TOKEN}"
PASSWORD = "a-long-test-password"


def recent_ms() -> int:
    return int(dt.datetime.now(dt.UTC).timestamp() * 1000) - 600_000


def stored(app: Flask) -> tuple[int, int, int, int]:
    with transaction(app) as session:
        return tuple(  # type: ignore[return-value]
            session.scalar(select(func.count()).select_from(model)) or 0
            for model in (Event, Execution, Decision, Pause)
        )


def post_raw(client: FlaskClient, data: str) -> Any:
    return client.post(URL, data=data, content_type="application/json")


# --- numbers --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        '{"execution_id": "e1", "status": "FAILURE", "timers": [{"start": 1e400}]}',
        '[{"execution_id": "e1", "event_type": "runner_on_ok", "timestamp": -1e400}]',
        '{"execution_id": "e1", "status": "FAILURE", "x": NaN}',
        '{"execution_id": "e1", "status": "FAILURE", "x": Infinity}',
    ],
)
def test_a_number_that_is_not_finite_is_400_and_stores_nothing(
    client: FlaskClient, app: Flask, data: str
) -> None:
    response = post_raw(client, data)

    assert response.status_code == 400
    assert response.get_json()["error"] == "malformed"
    assert stored(app) == (0, 0, 0, 0)


def test_an_overflowing_number_in_an_api_body_is_400(
    client: FlaskClient, app: Flask, api_headers: dict[str, str]
) -> None:
    response = client.put(
        "/api/v1/pauses/global",
        data='{"reason": "maintenance", "until": 1e400}',
        content_type="application/json",
        headers=api_headers,
    )

    assert response.status_code == 400
    assert response.get_json()["error"] == "malformed"
    assert stored(app) == (0, 0, 0, 0)


def test_every_answer_is_strict_json(
    client: FlaskClient, app: Flask, api_headers: dict[str, str]
) -> None:
    """What the API emits parses under RFC 8259, whatever the Runner sent (large floats too)."""
    items = failing_run_events(recent_ms())
    items[-1]["message"] = {"stats": {"web1": {"failures": 1.7976931348623157e308}}}
    assert post_raw(client, json.dumps(items)).status_code == 202

    for path in (f"/api/v1/executions/{EXECUTION_ID}", f"/api/v1/executions/{EXECUTION_ID}/events"):
        response = client.get(path, headers=api_headers)
        assert response.status_code == 200
        loads_strict(response.get_data())


# --- row ids --------------------------------------------------------------------------------


@pytest.mark.parametrize("restart_id", ["2147483648", "9223372036854775808", "1" + "0" * 19, "0"])
def test_a_row_id_past_the_databases_integers_is_404(
    client: FlaskClient, api_headers: dict[str, str], restart_id: str
) -> None:
    response = client.post(f"/api/v1/restarts/{restart_id}/cancel", headers=api_headers)

    assert response.status_code == 404
    assert response.get_json()["error"] == "not_found"


def test_the_largest_row_id_is_an_ordinary_unknown_row(
    client: FlaskClient, api_headers: dict[str, str]
) -> None:
    response = client.post("/api/v1/restarts/2147483647/cancel", headers=api_headers)

    assert response.status_code == 404


@pytest.mark.parametrize("restart_id", ["2147483648", "1" + "0" * 19])
def test_the_admin_cancel_page_with_a_huge_id_is_404(app: Flask, restart_id: str) -> None:
    save_user(app, "olivia", "operator", PASSWORD)
    client = app.test_client()
    sign_in(client, "olivia", PASSWORD)

    response = client.get(f"/admin/restarts/{restart_id}/cancel")

    assert response.status_code == 404
    assert "Traceback" not in response.get_data(as_text=True)


# --- Runner ids -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("execution_id", ".."),
        ("execution_id", "."),
        ("execution_id", "../../auth/token"),
        ("execution_id", "a/b"),
        ("execution_id", "a\\b"),
        ("execution_id", "a\nb"),
        ("job_id", "../pauses"),
        ("job_id", "x\x1bb"),
        ("account_alias", "../XXXX"),
    ],
)
def test_an_id_that_is_not_one_path_segment_is_422_naming_the_field(
    client: FlaskClient, app: Flask, field: str, value: str
) -> None:
    document = {
        "execution_id": "exec-1",
        "job_id": "job-1",
        "account_alias": "XXXX",
        "status": "FAILURE",
        "timers": [{"start": recent_ms(), "end": recent_ms() + 1000}],
        "failed_hosts": ["web1"],
    }
    document[field] = value

    response = post_raw(client, json.dumps(document))

    assert response.status_code == 422
    assert field in response.get_json()["fields"]
    assert stored(app) == (0, 0, 0, 0)


def test_an_event_id_with_a_slash_is_refused_in_an_event_stream_too(
    client: FlaskClient, app: Flask
) -> None:
    items = failing_run_events(recent_ms(), execution_id="a/b")

    response = post_raw(client, json.dumps(items))

    assert response.status_code == 422
    assert stored(app) == (0, 0, 0, 0)


@pytest.mark.parametrize(
    ("value", "segment"),
    [
        ("..", "%2E%2E"),
        (".", "%2E"),
        ("a/b", "a%2Fb"),
        ("a b?c#d", "a%20b%3Fc%23d"),
        ("exec.1", "exec.1"),
    ],
)
def test_ids_are_encoded_as_one_segment_in_every_url(value: str, segment: str) -> None:
    assert quote_segment(value) == segment


def test_admin_links_encode_ids_with_reserved_characters(client: FlaskClient, app: Flask) -> None:
    """An id the Runner may legitimately use (`?`, `#`, `%`, spaces) links to its own page."""
    odd = "exec 1?x=%2F#y"
    assert (
        post_raw(client, json.dumps(failing_run_events(recent_ms(), execution_id=odd))).status_code
        == 202
    )
    save_user(app, "olivia", "operator", PASSWORD)
    sign_in(client, "olivia", PASSWORD)

    listing = client.get("/admin/").get_data(as_text=True)

    href = "/admin/executions/exec%201%3Fx%3D%252F%23y"
    assert f'href="{href}"' in listing
    page = client.get(href)
    assert page.status_code == 200
    assert "exec 1?x=%2F#y" in page.get_data(as_text=True)


# --- control characters ---------------------------------------------------------------------


def test_a_newline_in_an_id_is_refused_and_forges_no_log_line(
    client: FlaskClient, app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    """Ids with control characters never get in; any text logged (a Runner's answer, a
    header) keeps its record to one line, escaped."""
    caplog.set_level(logging.DEBUG)
    forged = "exec-1\n2026-11-30 12:00:00 INFO app.web.admin: olivia signed in"
    document = {"execution_id": forged, "status": "FAILURE", "job_id": "job\r\nX: 1"}

    assert post_raw(client, json.dumps(document)).status_code == 422
    logging.getLogger("app.dispatcher").warning("Runner answered %s for %s", "500", forged)

    assert "exec-1\\x0a2026-11-30" in caplog.text  # logged, escaped
    for line in caplog.text.splitlines():
        assert "olivia signed in" not in line or "exec-1\\x0a" in line, line
        assert not line.startswith("X: 1"), line
    assert stored(app) == (0, 0, 0, 0)


def test_control_and_bidi_characters_in_host_names_are_shown_escaped(
    client: FlaskClient, app: Flask
) -> None:
    spoof = "web\u202e1gnp.exe"
    items = failing_run_events(recent_ms(), failing=(spoof, "db\x071"))
    assert post_raw(client, json.dumps(items)).status_code == 202
    save_user(app, "olivia", "operator", PASSWORD)
    sign_in(client, "olivia", PASSWORD)

    page = client.get(f"/admin/executions/{EXECUTION_ID}").get_data(as_text=True)

    assert "\u202e" not in page and "\x07" not in page
    assert "web\\u202e1gnp.exe" in page
    assert "db\\x071" in page


def test_a_callback_opens_no_session(app: Flask) -> None:
    """The Runner sends no cookie: a callback gets a null session, a page a real one."""
    interface = app.session_interface
    with app.test_request_context("/callbacks/anything", method="POST"):
        assert interface.is_null_session(interface.open_session(app, flask.request))
    with app.test_request_context("/admin/"):
        assert not interface.is_null_session(interface.open_session(app, flask.request))
