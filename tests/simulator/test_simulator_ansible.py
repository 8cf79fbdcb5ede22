"""The Ansible engine, for real: ansible-playbook runs the bundled play, and the feed, the
failure classes and the error text come from Ansible itself (docs/simulator.md, "Engines")."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from click.testing import CliRunner

from app.runner import RestartHost, RunnerClient
from app.runner.documents import parse_status_event
from app.simulator import (
    AnsibleEngine,
    AnsibleNotInstalled,
    RunContext,
    Simulator,
    SimulatorConfig,
    SimulatorServer,
)
from app.simulator.ansible_engine import AnsibleRun
from app.simulator.commands import simulator_command
from tests.simulator.conftest import ACCOUNT, Receiver, bearer, config, make_client

PSQL_DOWN = "psql: could not connect to server: Connection timed out"
BAD_PASSWORD = 'FATAL: password authentication failed for user "app"'


class RecordingEngine(AnsibleEngine):
    """The real engine, keeping each run so a test can see its process."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.runs: list[AnsibleRun] = []

    def start_run(self, context: RunContext) -> AnsibleRun:
        run = super().start_run(context)
        self.runs.append(run)
        return run


@pytest.fixture
def engine() -> RecordingEngine:
    return RecordingEngine()


@pytest.fixture
def ansible_sim(engine: RecordingEngine) -> Iterator[SimulatorServer]:
    """A simulator running real ansible-playbook, its clock stopped (tests advance it)."""
    server = SimulatorServer(config(), engine=engine).start()
    yield server
    server.close()


@pytest.fixture
def ansible_client(ansible_sim: SimulatorServer, http: requests.Session) -> RunnerClient:
    return make_client(ansible_sim, http)


def events_of(sim: SimulatorServer, job_id: str, execution: str) -> list[dict[str, Any]]:
    events = sim.simulator.status_events(ACCOUNT, job_id, execution, None, None)
    assert isinstance(events, list)
    return events


def runs_of(events: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """The events split into runs: each ends with its playbook_result."""
    runs: list[list[dict[str, Any]]] = [[]]
    for event in events:
        runs[-1].append(event)
        if event["event_type"] == "playbook_result":
            runs.append([])
    return runs[:-1]


def test_a_real_run_then_a_restart_of_only_the_failed_hosts(
    ansible_sim: SimulatorServer,
    ansible_client: RunnerClient,
    engine: RecordingEngine,
    receiver: Receiver,
) -> None:
    hosts = [
        {"id": "web1", "hostVars": {"role": "web"}},
        # by host script: fails its first run only, with this text on stderr and rc 2
        {
            "id": "db1",
            "hostVars": {"sim_script": {"fail_first": 1, "fail_message": BAD_PASSWORD, "rc": 2}},
        },
        # by plain host vars: fails every run
        {"id": "db2", "hostVars": {"sim_fail": True, "sim_fail_message": PSQL_DOWN}},
        {"id": "web3", "hostVars": {"sim_unreachable": True}},
    ]
    job = ansible_client.create_job(
        ACCOUNT,
        {
            "description": "real ansible",
            "hosts": hosts,
            "callbacks": [{"url": receiver.url("feed"), "level": "DEBUG"}],
        },
    )
    execution = ansible_client.start_job(ACCOUNT, job.id).execution_id
    ansible_sim.simulator.advance_until_idle()

    doc = ansible_client.get_execution(ACCOUNT, job.id, execution)
    assert doc.status == "FAILURE"
    assert doc.failed_hosts == ("db1", "db2", "web3")
    assert not engine.runs[0].alive

    events = events_of(ansible_sim, job.id, execution)
    types = [e["event_type"] for e in events]
    assert types[:3] == ["playbook_on_start", "playbook_on_play_start", "playbook_on_task_start"]
    assert types[-2:] == ["playbook_on_stats", "playbook_result"]
    by_host: dict[tuple[str, str], dict[str, Any]] = {}
    for event in events:
        parsed = parse_status_event(event)  # respawn's parser takes every one
        assert parsed.execution_id == execution
        host = event["message"].get("host")
        if host is not None:
            by_host[(event["event_type"], host)] = event["message"]

    assert {h for kind, h in by_host if kind == "runner_on_ok"} == {"web1", "db1", "db2"}
    db1 = by_host[("runner_on_failed", "db1")]
    assert db1["task"] == "restart service"
    assert db1["msg"] == "non-zero return code"  # Ansible's own words
    assert db1["stderr"] == BAD_PASSWORD and db1["rc"] == 2 and "changed" in db1
    db2 = by_host[("runner_on_failed", "db2")]
    assert db2["stderr"] == PSQL_DOWN and db2["rc"] == 1
    web3 = by_host[("runner_on_unreachable", "web3")]
    assert web3["unreachable"] is True and web3["task"] == "check connection"
    assert "Failed to connect to the host via ssh" in web3["msg"]
    assert "Connection refused" in web3["msg"]
    assert ("runner_on_failed", "web1") not in by_host

    result = events[-1]["message"]
    assert result["status"] == "FAILURE"
    assert set(result["stats"]) == {"web1", "db1", "db2", "web3"}
    assert result["stats"]["web1"]["failures"] == 0 and result["stats"]["web1"]["ok"] == 4
    assert result["stats"]["db1"]["failures"] == 1
    assert result["stats"]["web3"]["unreachable"] == 1
    assert events[-2]["message"]["stats"] == result["stats"]  # Ansible's playbook_on_stats

    assert ansible_sim.simulator.callbacks.wait_idle(5)
    assert receiver.bodies("feed") == events  # the feed carries the same records

    # restart only the failed hosts: only they run
    ansible_client.restart(
        ACCOUNT, job.id, execution, [RestartHost(h) for h in ("db1", "db2", "web3")]
    )
    ansible_sim.simulator.advance_until_idle()
    again = ansible_client.get_execution(ACCOUNT, job.id, execution)
    assert again.status == "FAILURE" and again.failed_hosts == ("db2", "web3")
    assert len(again.timers) == 2
    first_run, second_run = runs_of(events_of(ansible_sim, job.id, execution))
    assert first_run == events
    assert {e["message"].get("host") for e in second_run} - {None} == {"db1", "db2", "web3"}
    assert set(second_run[-1]["message"]["stats"]) == {"db1", "db2", "web3"}
    assert ("runner_on_ok", "db1") in {
        (e["event_type"], e["message"].get("host")) for e in second_run
    }


def test_an_init_failure_never_starts_ansible(
    ansible_sim: SimulatorServer, ansible_client: RunnerClient, engine: RecordingEngine
) -> None:
    job = ansible_client.create_job(
        ACCOUNT,
        {
            "description": "no clone",
            "hosts": [
                {"id": "web1"},
                {"id": "web2", "hostVars": {"sim_script": {"init_failure_first": 1}}},
            ],
        },
    )
    execution = ansible_client.start_job(ACCOUNT, job.id).execution_id
    ansible_sim.simulator.advance_until_idle()
    assert ansible_client.get_execution(ACCOUNT, job.id, execution).status == "INIT_FAILURE"
    (result,) = events_of(ansible_sim, job.id, execution)
    assert result["message"]["status"] == "INIT_FAILURE"
    assert "could not be resolved" in result["message"]["msg"]
    assert not engine.runs[0].alive


def test_stop_kills_the_playbook(
    ansible_sim: SimulatorServer,
    ansible_client: RunnerClient,
    engine: RecordingEngine,
    http: requests.Session,
) -> None:
    job = ansible_client.create_job(ACCOUNT, {"description": "stopped", "hosts": [{"id": "w1"}]})
    execution = ansible_client.start_job(ACCOUNT, job.id).execution_id
    ansible_sim.simulator.advance()  # INITIALIZING: ansible-playbook has started
    assert engine.runs[0].alive
    stop = f"{ansible_sim.url}/jobs/{ACCOUNT}/{job.id}/executions/{execution}/stop"
    assert http.post(stop, json={}, headers=bearer(ansible_client), timeout=5).ok
    ansible_sim.simulator.advance()
    assert ansible_sim.simulator.execution(execution)["status"] == "STOPPED"
    assert not engine.runs[0].alive


def test_reset_and_close_kill_running_playbooks(
    ansible_sim: SimulatorServer, ansible_client: RunnerClient, engine: RecordingEngine
) -> None:
    for _ in range(2):
        job = ansible_client.create_job(ACCOUNT, {"description": "busy", "hosts": [{"id": "w1"}]})
        ansible_client.start_job(ACCOUNT, job.id)
        ansible_sim.simulator.advance()
        assert engine.runs[-1].alive
        if len(engine.runs) == 1:
            ansible_sim.simulator.reset()
        else:
            ansible_sim.close()
        assert not engine.runs[-1].alive


def test_a_run_past_its_time_bound_is_killed_and_fails(http: requests.Session) -> None:
    engine = RecordingEngine(timeout=0)  # every poll finds the run out of time
    with SimulatorServer(config(), engine=engine) as sim:
        client = make_client(sim, http)
        job = client.create_job(ACCOUNT, {"description": "slow", "hosts": [{"id": "w1"}]})
        execution = client.start_job(ACCOUNT, job.id).execution_id
        sim.simulator.advance_until_idle()
        doc = sim.simulator.execution(execution)
        assert doc["status"] == "FAILURE" and doc["failed_hosts"] == ["w1"]
        result = events_of(sim, job.id, execution)[-1]["message"]
        assert result["msg"] == "ansible-playbook did not finish within 0 s"
        assert not engine.runs[0].alive


def test_the_engine_is_chosen_by_name(http: requests.Session) -> None:
    with SimulatorServer(config(engine="ansible")) as sim:
        assert isinstance(sim.simulator.engine, AnsibleEngine)
        assert http.get(f"{sim.url}/_sim/state", timeout=5).json()["engine"] == "AnsibleEngine"
    with SimulatorServer(config(), engine="ansible") as sim:
        assert isinstance(sim.simulator.engine, AnsibleEngine)


def test_a_clear_error_without_ansible_core(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(AnsibleNotInstalled, match="needs ansible-core"):
        AnsibleEngine()
    with pytest.raises(AnsibleNotInstalled):
        Simulator(SimulatorConfig(engine="ansible"))
    result = CliRunner().invoke(simulator_command, ["--engine", "ansible", "--port", "0"])
    assert result.exit_code == 2
    assert "needs ansible-core" in result.output
