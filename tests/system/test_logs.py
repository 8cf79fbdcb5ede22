"""`respawn serve` with `RESPAWN_LOG_FORMAT=json`: every line gunicorn and respawn write is a
JSON object, one per request among them, with no secret in any."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import requests

from tests.feed import failing_run_events
from tests.system.processes import TOKEN, base_env, migrate_cli, serve

pytestmark = pytest.mark.slow


def test_every_line_is_json_and_none_leaks_a_secret(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'logs.db'}"
    env = base_env(url, tmp_path, RESPAWN_DISPATCHER="off", RESPAWN_LOG_FORMAT="json")
    migrate_cli(env)
    items = failing_run_events(int(time.time() * 1000) - 60_000)
    items[0]["message"]["password"] = "planted-password-0123456789"

    with serve(env, tmp_path) as served:
        stored = requests.post(
            f"{served.base}/callbacks/{TOKEN}",
            json=items,
            headers={"X-Request-Id": "trace-7"},
            timeout=10,
        )
        assert stored.status_code == 202
        log = served.log
    text = log.read_text()

    records = [json.loads(line) for line in text.splitlines() if line.strip()]
    assert any(r["logger"] == "gunicorn.error" for r in records)  # gunicorn's own, as JSON
    (request,) = [r for r in records if r.get("request_id") == "trace-7" and "status" in r]
    assert (request["method"], request["status"]) == ("POST", 202)
    assert TOKEN not in text and "planted-password" not in text
