"""Liveness and readiness when the database is not there."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app import create_app
from app.extensions import get_runtime
from tests.conftest import API_TOKEN, CALLBACK_TOKEN

PLANTED = "db-pa55-PLANTED"


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql+psycopg://respawn:{PLANTED}@127.0.0.1:1/respawn?connect_timeout=2",
        "sqlite:///{folder}",  # a folder where the database file should be: it cannot open
    ],
    ids=["postgres-unreachable", "sqlite-unopenable"],
)
def test_readyz_says_unready_when_the_database_is_down(
    url: str, tmp_path: Path, policy_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "not-a-file.db"
    folder.mkdir()
    app = create_app(
        {
            "database_url": url.format(folder=folder),
            "callback_tokens": (CALLBACK_TOKEN,),
            "testing": True,
            "policy_file": str(policy_file),
            "log_level": "WARNING",
            "spool_dir": str(tmp_path / "spool"),
        }
    )
    try:
        client = app.test_client()
        health = client.get("/healthz")
        ready = client.get("/readyz")
    finally:
        get_runtime(app).close()

    assert health.status_code == 200  # alive: the process itself is fine
    assert ready.status_code == 503
    body = ready.get_json()
    assert body["ready"] is False
    assert body["checks"]["database"] == "unreachable"
    assert body["checks"]["policy"]["state"] == "ok"
    assert PLANTED not in json.dumps(body)
    assert "readiness: database unreachable" in caplog.text
    assert PLANTED not in caplog.text


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql+psycopg://respawn:{PLANTED}@127.0.0.1:1/respawn?connect_timeout=2",
        "sqlite:///{folder}",
    ],
    ids=["postgres-unreachable", "sqlite-unopenable"],
)
def test_the_api_and_the_admin_answer_503_while_the_database_is_down(
    url: str, tmp_path: Path, policy_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A database that does not answer is not a bug: the client is told to retry (503 with
    # Retry-After), not "internal error", and the log says what happened without a stack
    # trace or a secret.
    folder = tmp_path / "not-a-file.db"
    folder.mkdir()
    app = create_app(
        {
            "database_url": url.format(folder=folder),
            "callback_tokens": (CALLBACK_TOKEN,),
            "api_tokens": (API_TOKEN,),
            "testing": True,
            "policy_file": str(policy_file),
            "log_level": "WARNING",
            "spool_dir": str(tmp_path / "spool"),
        }
    )
    try:
        client = app.test_client()
        listed = client.get("/api/v1/executions", headers={"Authorization": f"Bearer {API_TOKEN}"})
        login_page = client.get("/admin/login").get_data(as_text=True)
        token = login_page.split('name="csrf_token" type="hidden" value="')[1].split('"')[0]
        login = client.post(
            "/admin/login", data={"csrf_token": token, "name": "olivia", "password": "x" * 12}
        )
    finally:
        get_runtime(app).close()

    assert listed.status_code == 503
    assert listed.headers["Retry-After"] == "5"
    assert listed.get_json() == {
        "error": "unavailable",
        "message": "the database is unavailable; nothing was changed",
        "fields": {},
    }
    assert login.status_code == 503 and login.headers["Retry-After"] == "5"
    assert "the database is unavailable" in login.get_data(as_text=True)
    assert "database unavailable on GET /api/v1/executions" in caplog.text
    assert "Traceback" not in caplog.text and "internal_error" not in caplog.text
    for output in (listed.get_data(as_text=True), login.get_data(as_text=True), caplog.text):
        assert PLANTED not in output
