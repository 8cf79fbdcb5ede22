"""`respawn demo` (what `make run` runs) as a user starts it, and the policy files we ship."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from click.testing import CliRunner

from app.cli.policy import check_command
from app.core.policy_source import load_policy_file

PROJECT = Path(__file__).resolve().parents[2]
DEMO_POLICY = PROJECT / "app" / "demo_policy.yaml"

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            found = check()
        except requests.RequestException:
            found = None
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def test_demo_starts_decides_by_its_policy_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    port, sim_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RESPAWN_")}
    env["PYTHONPATH"] = str(PROJECT)
    log = tmp_path / "demo.log"
    with log.open("wb") as out:
        demo = subprocess.Popen(
            [
                sys.executable, "-m", "app.cli", "demo", "--port", str(port),
                "--simulator-port", str(sim_port), "--speed", "20", "--seed", "7",
                "--every", "3600", "--instance", str(tmp_path / "instance"),
            ],
            cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        token = wait_for(
            lambda: re.search(r"Authorization: Bearer (\S+)", log.read_text()), 60, "the banner"
        ).group(1)
        assert requests.get(f"{base}/healthz", timeout=5).json() == {"status": "ok"}
        headers = {"Authorization": f"Bearer {token}"}

        def first_decision() -> dict[str, Any] | None:
            listing = requests.get(
                f"{base}/api/v1/executions",
                params={"status": "FAILURE"},
                headers=headers,
                timeout=5,
            ).json()
            for item in listing["items"]:
                detail = requests.get(
                    f"{base}/api/v1/executions/{item['execution_id']}", headers=headers, timeout=5
                ).json()
                if detail["decisions"]:
                    decision: dict[str, Any] = detail["decisions"][0]
                    return decision
            return None

        decision = wait_for(first_decision, 90, "the first failure to be decided")
        assert decision["policy_version"] == load_policy_file(DEMO_POLICY).version_hash
        rules = {"no-db-migrations", "flaky-network", "init-failures", "async-timeouts", "defaults"}
        assert decision["rule"] in rules
        # The banner names the callback URL: an operator can post a status event by hand.
        callback = re.search(r"callbacks +(http://\S+)", log.read_text())
        assert callback is not None
        posted = requests.post(
            callback.group(1),
            json={"execution_id": "by-hand-1", "status": "RUNNING", "start": 1_700_000_000_000},
            timeout=10,
        )
        assert posted.status_code == 202 and posted.json()["accepted"] == 1
    finally:
        demo.send_signal(signal.SIGINT)
        code = demo.wait(60)
    output = log.read_text()
    assert code == 0, output
    assert "stopping respawn demo" in output
    assert "Traceback" not in output
    assert "ConnectionError" not in output  # no callback was posted to a closed receiver
    assert not listening(port) and not listening(sim_port)
    assert (tmp_path / "instance" / "demo.db").is_file()


def shipped_policy_files() -> list[Path]:
    """Every YAML file in the repository that is a policy file (it has `version:` and policy
    sections), outside test fixtures."""
    found = []
    for path in sorted(PROJECT.rglob("*.y*ml")):
        parts = path.relative_to(PROJECT).parts
        if parts[0] in {".venv", "tests", "mutants", "test-artifacts", ".git"}:
            continue
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        if isinstance(data, dict) and "version" in data and {"defaults", "rules"} & set(data):
            found.append(path)
    return found


def test_the_repository_ships_policy_files() -> None:
    names = {p.relative_to(PROJECT).as_posix() for p in shipped_policy_files()}
    assert {"policy.yaml", "app/demo_policy.yaml"} <= names


@pytest.mark.parametrize(
    "path", shipped_policy_files(), ids=lambda p: p.relative_to(PROJECT).as_posix()
)
def test_every_shipped_policy_file_passes_policy_check(path: Path) -> None:
    result = CliRunner().invoke(check_command, [str(path)])

    assert result.exit_code == 0, result.output
    assert ": OK (version " in result.output
