"""Host scripts: every accepted form, glob rules, and the `respawn simulator` command."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import requests
from click.testing import CliRunner

from app.runner import RunnerClient
from app.simulator import HostScript, SimulatorControl, SimulatorServer, parse_script
from app.simulator.commands import simulator_command
from app.simulator.scripts import ScriptError
from tests.simulator.conftest import ACCOUNT, create_job

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("ok", HostScript()),
        ("unreachable", HostScript("unreachable")),
        ("init_failure", HostScript("init_failure")),
        ("fail_first:2", HostScript("fail", first=2)),
        ("unreachable_first: 1", HostScript("unreachable", first=1)),
        ("flaky:0.25", HostScript("fail", probability=0.25)),
        ({"flaky": 0.5, "outcome": "unreachable"}, HostScript("unreachable", probability=0.5)),
        ({"fail_message": "psql: timed out"}, HostScript("fail", message="psql: timed out")),
        (
            {"fail_first": 1, "fail_message": "boom", "rc": 2, "task": "install packages"},
            HostScript("fail", first=1, message="boom", rc=2, task="install packages"),
        ),
        ('{"async_failed_first": 3}', HostScript("async_failed", first=3)),
        ({"outcome": "fail", "first": 1, "probability": 1}, HostScript("fail", 1, 1.0)),
    ],
)
def test_script_forms(given: Any, expected: HostScript) -> None:
    assert parse_script(given) == expected


@pytest.mark.parametrize(
    "given",
    [
        "explode",
        "flaky:lots",
        {"flaky": 2},
        {"fail_first": -1},
        {"rc": 0, "outcome": "fail"},
        {"fail_first": 1, "unreachable_first": 1},
        {"colour": "red"},
        42,
        "{bad json",
    ],
)
def test_bad_scripts_say_why(given: Any) -> None:
    with pytest.raises(ScriptError):
        parse_script(given)


def test_outcomes_by_attempt() -> None:
    rng = random.Random(1)
    assert [HostScript("fail", first=2).outcome_for(n, rng) for n in range(4)] == [
        "fail",
        "fail",
        "ok",
        "ok",
    ]
    assert HostScript("unreachable").outcome_for(9, rng) == "unreachable"
    flaky = HostScript("fail", probability=0.5)
    draws = [flaky.outcome_for(0, random.Random(n)) for n in range(200)]
    assert 60 < draws.count("fail") < 140


def test_glob_rules_script_hosts_without_their_own(
    sim: SimulatorServer, client: RunnerClient, control: SimulatorControl
) -> None:
    control.scripts({"db*": "fail", "web*": "unreachable_first:1"})
    job = client.create_job(
        ACCOUNT,
        {
            "description": "mixed",
            "hosts": [
                {"id": "db1"},
                {"id": "web1", "hostVars": {"sim_script": "ok"}},
                {"id": "web2"},
            ],
        },
    )
    execution = client.start_job(ACCOUNT, job.id).execution_id
    control.advance_until_idle()
    assert control.execution(execution)["failed_hosts"] == ["db1", "web2"]


def test_fail_message_reaches_the_failure_event(sim: SimulatorServer, client: RunnerClient) -> None:
    job = create_job(client, {"db1": {"fail_message": "FATAL: password authentication failed"}})
    execution = client.start_job(ACCOUNT, job.id).execution_id
    sim.simulator.advance_until_idle()
    events = sim.simulator.status_events(ACCOUNT, job.id, execution, None, None)
    assert isinstance(events, list)
    (failed,) = [e for e in events if e["event_type"] == "runner_on_failed"]
    assert failed["message"]["stderr"] == "FATAL: password authentication failed"


def test_command_rejects_a_bad_script() -> None:
    result = CliRunner().invoke(simulator_command, ["--script", "web*=explode", "--port", "0"])
    assert result.exit_code == 2
    assert "unknown host script" in result.output


def test_command_serves_until_interrupted(http: requests.Session) -> None:
    code = "from app.simulator.commands import simulator_command; simulator_command()"
    process = subprocess.Popen(
        [
            sys.executable,
            "-u",
            "-c",
            code,
            "--port",
            "0",
            "--speed",
            "0",
            "--seed",
            "4",
            "--password",
            "cli-pa55word",
            "--script",
            "web*=fail",
            "--error-rate",
            "0",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        assert first.startswith("Runner simulator on http://127.0.0.1:"), first
        url = first.split(" on ", 1)[1].split(" ", 1)[0]
        login = http.post(
            f"{url}/v2/authentication/login",
            json={"username": "user@example.com", "password": "cli-pa55word"},
            timeout=5,
        )
        assert login.status_code == 200 and login.json()["accountAlias"] == "XXXX"
        state = http.get(f"{url}/_sim/state", timeout=5).json()
        assert state["settings"]["seed"] == 4 and state["settings"]["speed"] == 0
        assert state["scripts"] == [{"hosts": "web*", "script": {"outcome": "fail", "rc": 1}}]
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=10)
        finally:
            if process.poll() is None:
                process.kill()
            if process.stdout is not None:
                process.stdout.close()
    assert process.returncode == 0
