"""Liveness and readiness when the database is not there."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app import create_app
from app.extensions import get_runtime
from tests.conftest import CALLBACK_TOKEN

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
