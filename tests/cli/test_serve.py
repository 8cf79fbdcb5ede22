"""`respawn db upgrade` and `respawn serve` as an operator runs them: gunicorn, real sockets."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from app import migrate
from tests.feed import failing_run_events

pytestmark = pytest.mark.slow

PROJECT = Path(__file__).resolve().parents[2]
TOKEN = "serve-test-callback-token-0123"
API = "serve-test-api-token-0123456"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_serve_refuses_to_start_without_required_settings(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RESPAWN_")}

    result = run_cli(env, "serve")

    assert result.returncode != 0
    assert "RESPAWN_SECRET_KEY" in result.stderr and "RESPAWN_CALLBACK_TOKENS" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_says_when_its_metrics_folder_cannot_be_made(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RESPAWN_")}
    (tmp_path / "a-file").write_text("")
    env.update(
        RESPAWN_SECRET_KEY="serve-test-secret-key-0123456789abcdef",
        RESPAWN_CALLBACK_TOKENS=TOKEN,
        RESPAWN_METRICS_DIR=str(tmp_path / "a-file" / "metrics"),
    )

    result = run_cli(env, "serve")

    assert result.returncode != 0
    assert "RESPAWN_METRICS_DIR" in result.stderr and "cannot be made" in result.stderr
    assert "Traceback" not in result.stderr


def test_upgrade_then_serve_with_gunicorn(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RESPAWN_")}
    env.update(
        RESPAWN_DATABASE_URL=f"sqlite:///{tmp_path / 'served.db'}",
        RESPAWN_SECRET_KEY="serve-test-secret-key-0123456789abcdef",
        RESPAWN_CALLBACK_TOKENS=TOKEN,
        RESPAWN_API_TOKENS=API,
        RESPAWN_POLICY_FILE=str(PROJECT / "policy.yaml"),
        RESPAWN_DISPATCHER="off",
        RESPAWN_CALLBACK_ACK="processed",  # so the listing right after shows the callback
        RESPAWN_SPOOL_DIR=str(tmp_path / "spool"),
        PYTHONPATH=str(PROJECT),
        HOME=str(tmp_path / "home"),
    )
    upgraded = run_cli(env, "db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    assert str(migrate.head_revision()) in upgraded.stdout

    log = tmp_path / "gunicorn.log"
    with log.open("wb") as out:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "app.cli",
                "serve",
                "--workers",
                "2",
            ],
            cwd=PROJECT,
            # The address from the setting (as the container sets it), and a metrics folder
            # that does not exist yet: serve makes it.
            env={
                **env,
                "RESPAWN_BIND": f"127.0.0.1:{port}",
                "RESPAWN_METRICS_DIR": str(tmp_path / "metrics" / "web"),
            },
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90  # gunicorn boots in seconds; a busy machine is slower
        while True:
            try:
                if requests.get(f"{base}/healthz", timeout=5).status_code == 200:
                    break
            except requests.RequestException:  # not up yet
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        with requests.Session() as http:
            stored = http.post(
                f"{base}/callbacks/{TOKEN}",
                json=failing_run_events(int(time.time() * 1000)),
                timeout=10,
            )
            ready = http.get(f"{base}/readyz", timeout=5)
            listed = http.get(
                f"{base}/api/v1/executions", headers={"Authorization": f"Bearer {API}"}, timeout=5
            )
            unknown = http.post(f"{base}/callbacks/wrong-token", json={}, timeout=5)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)

    assert stored.status_code == 202 and stored.json()["accepted"] == 7
    assert list((tmp_path / "metrics" / "web").glob("*.db"))  # the workers counted there
    assert ready.status_code == 200 and ready.json()["ready"] is True
    assert listed.json()["items"][0]["status"] == "FAILURE"
    assert unknown.status_code == 404
    output = log.read_text()
    assert "/callbacks/" in output  # the access log is there ...
    assert TOKEN not in output  # ... with the token masked
    # no control socket another instance could take over (gunicorn's default: ~/.gunicorn)
    assert not (tmp_path / "home" / ".gunicorn").exists()
