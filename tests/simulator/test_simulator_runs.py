"""Jobs, executions and restarts behave like the Runner's, driven over real HTTP."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
import requests

from app.runner import RestartHost, RunnerClient, RunnerNotFound, RunnerRejected
from app.simulator import SimulatorControl, SimulatorServer
from tests.simulator.conftest import ACCOUNT, bearer, create_job, make_client


def statuses(sim: SimulatorServer, *execution_ids: str) -> list[str]:
    return [sim.simulator.execution(e)["status"] for e in execution_ids]


# -- jobs -----------------------------------------------------------------------------------


def test_job_create_get_list_update_delete(
    sim: SimulatorServer, http: requests.Session, client: RunnerClient
) -> None:
    headers = bearer(client)
    definition = {
        "description": "Sample Job",
        "repository": {"url": "https://git.example/r.git", "credentials": {"password": "gh-pw"}},
        "hosts": [{"id": "localhost", "sshPrivateKey": "S0VZ", "hostVars": {"dc": "VA1"}}],
        "sshPrivateKey": "S0VZLUFMTA==",
        "callbacks": ["http://127.0.0.1:9/old-style"],
    }
    created = http.put(
        f"{sim.url}/jobs/{ACCOUNT}?immediate=false", json=definition, headers=headers, timeout=5
    )
    assert created.status_code == 200
    (job,) = created.json()  # the published one-item array
    assert job["status"] == "ACTIVE" and job["accountAlias"] == ACCOUNT
    assert job["repository"]["credentials"] == {"password": "gh-pw"}  # echoed, as published
    assert "S0VZ" not in created.text  # private keys are never kept

    second = client.create_job(ACCOUNT, {"description": "second"})
    listed = http.get(f"{sim.url}/jobs/{ACCOUNT}?page=0&size=100", headers=headers, timeout=5)
    page = listed.json()
    assert page["totalSize"] == 2 and page["page"] == 0 and page["size"] == 100
    assert [j["id"] for j in page["results"]] == [second.id, job["id"]]  # newest first
    assert (
        http.get(f"{sim.url}/jobs/{ACCOUNT}?size=101", headers=headers, timeout=5).status_code
        == 400
    )

    updated = http.put(
        f"{sim.url}/jobs/{ACCOUNT}/{job['id']}",
        json={**definition, "description": "renamed"},
        headers=headers,
        timeout=5,
    )
    assert updated.json()[0]["description"] == "renamed"
    fetched = client.get_job(ACCOUNT, job["id"])
    assert fetched.description == "renamed"
    assert [(c.url, c.level) for c in fetched.callbacks] == [
        ("http://127.0.0.1:9/old-style", "DEBUG")
    ]

    deleted = http.delete(f"{sim.url}/jobs/{ACCOUNT}/{job['id']}", headers=headers, timeout=5)
    assert deleted.status_code == 204
    with pytest.raises(RunnerNotFound):
        client.get_job(ACCOUNT, job["id"])


def test_invalid_job_gets_a_model_state(
    sim: SimulatorServer, http: requests.Session, client: RunnerClient
) -> None:
    body = {
        "hosts": [{"hostVars": {}}, {"id": "a", "hostVars": {"sim_script": "explode"}}],
        "callbacks": [{"url": "ftp://x", "level": "LOUD"}],
    }
    response = http.post(f"{sim.url}/jobs/{ACCOUNT}", json=body, headers=bearer(client), timeout=5)
    assert response.status_code == 400
    state = response.json()["modelState"]
    assert set(state) == {
        "hosts[0].id",
        "hosts[1].hostVars.sim_script",
        "callbacks[0].url",
        "callbacks[0].level",
    }
    with pytest.raises(RunnerRejected) as caught:
        client.create_job(ACCOUNT, body)
    assert "hosts[0].id: The id field is required." in caught.value.message


# -- executions -----------------------------------------------------------------------------


def test_an_execution_walks_through_its_statuses(
    sim: SimulatorServer, client: RunnerClient
) -> None:
    job = create_job(client, {"web1": "ok", "web2": "fail"})
    started = client.start_job(ACCOUNT, job.id)
    assert started.status == "PENDING" and started.timers == ()

    seen = [client.get_execution(ACCOUNT, job.id, started.execution_id).status]
    for _ in range(8):
        sim.simulator.advance()
        seen.append(client.get_execution(ACCOUNT, job.id, started.execution_id).status)
    assert seen == ["PENDING", "INITIALIZING"] + ["RUNNING"] * 5 + ["FAILURE"] * 2

    done = client.get_execution(ACCOUNT, job.id, started.execution_id)
    assert done.failed_hosts == ("web2",)
    (timer,) = done.timers
    assert timer.start_ms is not None and timer.end_ms is not None
    assert timer.end_ms >= timer.start_ms
    assert done.repository_log["recent_commit"][0]["message"] == "Simulated commit"


def test_restart_is_refused_unless_failed(sim: SimulatorServer, client: RunnerClient) -> None:
    job = create_job(client, {"web1": "ok"})
    execution = client.start_job(ACCOUNT, job.id)
    sim.simulator.advance(2)  # RUNNING
    with pytest.raises(RunnerRejected) as caught:
        client.restart(ACCOUNT, job.id, execution.execution_id)
    assert caught.value.status_code == 400
    assert "RUNNING" in caught.value.message
    sim.simulator.advance_until_idle()
    with pytest.raises(RunnerRejected, match="SUCCESS"):
        client.restart(ACCOUNT, job.id, execution.execution_id)
    with pytest.raises(RunnerNotFound):
        client.restart(ACCOUNT, job.id, "00000000-0000-4000-8000-000000000000")


def test_restart_keeps_timers_and_adds_one_when_it_runs(
    sim: SimulatorServer, client: RunnerClient
) -> None:
    job = create_job(client, {"web1": "fail_first:1", "web2": "ok", "web3": "fail"})
    first = client.start_job(ACCOUNT, job.id)
    sim.simulator.advance_until_idle()
    failed = client.get_execution(ACCOUNT, job.id, first.execution_id)
    assert failed.status == "FAILURE" and failed.failed_hosts == ("web1", "web3")

    answer = client.restart(ACCOUNT, job.id, first.execution_id, [RestartHost("web1", "a2V5")])
    assert answer.status == "PENDING"
    assert answer.execution_id == first.execution_id
    assert answer.timers == failed.timers  # earlier timers kept, none added yet

    time.sleep(0.002)
    sim.simulator.advance_until_idle()
    again = client.get_execution(ACCOUNT, job.id, first.execution_id)
    assert again.status == "SUCCESS"  # only web1 ran, and it fails only its first run
    assert again.failed_hosts == ()
    assert len(again.timers) == 2 and again.timers[0] == failed.timers[0]
    assert again.timers[1].start_ms is not None and again.timers[0].end_ms is not None
    assert again.timers[1].start_ms >= again.timers[0].end_ms
    events = sim.simulator.status_events(ACCOUNT, job.id, first.execution_id, None, None)
    assert isinstance(events, list)
    second_run = events[[e["event_type"] for e in events].index("playbook_result") + 1 :]
    assert {e["message"].get("host") for e in second_run} - {None} == {"web1"}


def test_restart_with_no_hosts_reruns_the_original_hosts(
    sim: SimulatorServer, client: RunnerClient
) -> None:
    job = create_job(client, {"web1": "fail_first:1", "web2": "fail_first:2"})
    execution = client.start_job(ACCOUNT, job.id)
    sim.simulator.advance_until_idle()
    client.restart(ACCOUNT, job.id, execution.execution_id)  # POST {}
    sim.simulator.advance_until_idle()
    doc = client.get_execution(ACCOUNT, job.id, execution.execution_id)
    assert doc.status == "FAILURE" and doc.failed_hosts == ("web2",)
    assert sim.simulator.execution(execution.execution_id)["runs"] == 2


def test_restart_of_unknown_hosts_is_refused(sim: SimulatorServer, client: RunnerClient) -> None:
    job = create_job(client, {"web1": "fail"})
    execution = client.start_job(ACCOUNT, job.id)
    sim.simulator.advance_until_idle()
    with pytest.raises(RunnerRejected, match="not defined in the job: db9"):
        client.restart(ACCOUNT, job.id, execution.execution_id, [RestartHost("db9")])


def test_init_failure_can_be_restarted(sim: SimulatorServer, client: RunnerClient) -> None:
    job = create_job(
        client,
        {"web1": "ok", "web2": {"init_failure_first": 1, "message": "could not clone repository"}},
    )
    execution = client.start_job(ACCOUNT, job.id)
    sim.simulator.advance(2)
    doc = client.get_execution(ACCOUNT, job.id, execution.execution_id)
    assert doc.status == "INIT_FAILURE" and doc.failed_hosts == ()
    events = sim.simulator.status_events(ACCOUNT, job.id, execution.execution_id, None, None)
    assert isinstance(events, list)
    assert [e["event_type"] for e in events] == ["playbook_result"]
    assert events[0]["message"] == {
        "status": "INIT_FAILURE",
        "stats": {},
        "msg": "could not clone repository",
    }
    client.restart(ACCOUNT, job.id, execution.execution_id)
    sim.simulator.advance_until_idle()
    assert client.get_execution(ACCOUNT, job.id, execution.execution_id).status == "SUCCESS"


def test_at_most_four_run_at_once_per_account(sim: SimulatorServer, client: RunnerClient) -> None:
    job = create_job(client, ["web1"])
    ids = [client.start_job(ACCOUNT, job.id).execution_id for _ in range(6)]
    sim.simulator.advance()
    assert statuses(sim, *ids) == ["INITIALIZING"] * 4 + ["PENDING"] * 2
    sim.simulator.advance(5)
    assert statuses(sim, *ids) == ["RUNNING"] * 4 + ["PENDING"] * 2
    sim.simulator.advance()  # the first four finish; the slots free up on the next tick
    assert statuses(sim, *ids) == ["SUCCESS"] * 4 + ["PENDING"] * 2
    sim.simulator.advance()
    assert statuses(sim, *ids) == ["SUCCESS"] * 4 + ["INITIALIZING"] * 2


def test_stop_and_kill(sim: SimulatorServer, client: RunnerClient, http: requests.Session) -> None:
    job = create_job(client, ["web1"])
    running = client.start_job(ACCOUNT, job.id).execution_id
    pending = client.start_job(ACCOUNT, job.id).execution_id
    sim.simulator.update_settings({"max_running_per_account": 1})
    sim.simulator.advance(2)
    base = f"{sim.url}/jobs/{ACCOUNT}/{job.id}/executions"
    headers = bearer(client)

    stopped = http.post(
        f"{base}/{running}/stop", json={"expiryDuration": 5}, headers=headers, timeout=5
    )
    assert stopped.json()["status"] == "STOPPING"
    killed = http.post(
        f"{base}/{pending}/kill", json={"expiryDuration": 5}, headers=headers, timeout=5
    )
    assert killed.json()["status"] == "KILLING"
    sim.simulator.advance()
    assert statuses(sim, running, pending) == ["STOPPED", "KILLED"]
    doc = client.get_execution(ACCOUNT, job.id, running)
    assert doc.timers[0].end_ms is not None
    again = http.post(f"{base}/{running}/stop", json={}, headers=headers, timeout=5)
    assert again.status_code == 400


def test_execution_lists_are_paged_newest_first(sim: SimulatorServer, client: RunnerClient) -> None:
    first = create_job(client, ["a"])
    second = create_job(client, ["b"])
    ids = [client.start_job(ACCOUNT, job.id).execution_id for job in (first, second, first)]

    page = client.list_account_executions(ACCOUNT, page=0, size=2)
    assert page.total_size == 3 and not page.is_last
    assert [d.execution_id for d in page.items] == [ids[2], ids[1]]
    assert [d.execution_id for d in client.iter_account_executions(ACCOUNT, size=2)] == ids[::-1]
    assert [d.execution_id for d in client.iter_job_executions(ACCOUNT, first.id, size=1)] == [
        ids[2],
        ids[0],
    ]


def test_status_api_answers_an_array_or_a_page(
    sim: SimulatorServer, client: RunnerClient, http: requests.Session
) -> None:
    job = create_job(client, ["web1"])
    execution = client.start_job(ACCOUNT, job.id).execution_id
    sim.simulator.advance_until_idle()
    url = f"{sim.url}/status/{ACCOUNT}/job/{job.id}/execution/{execution}"
    events = http.get(url, headers=bearer(client), timeout=5).json()
    assert isinstance(events, list) and events[-1]["event_type"] == "playbook_result"
    page = http.get(url + "?page=1&size=3", headers=bearer(client), timeout=5).json()
    assert page["totalSize"] == len(events) and page["results"] == events[3:6]


def test_legacy_execution_shape(
    make_sim: Callable[..., SimulatorServer], http: requests.Session
) -> None:
    sim = make_sim(execution_shape="legacy")
    client = make_client(sim, http)
    job = create_job(client, ["web1"])
    execution = client.start_job(ACCOUNT, job.id).execution_id
    sim.simulator.advance_until_idle()
    raw: dict[str, Any] = http.get(
        f"{sim.url}/jobs/{ACCOUNT}/{job.id}/executions/{execution}",
        headers=bearer(client),
        timeout=5,
    ).json()
    assert "timers" not in raw and {"start", "end", "id"} <= set(raw)
    doc = client.get_execution(ACCOUNT, job.id, execution)
    assert doc.timers[0].start_ms == raw["start"] and doc.record_id == raw["id"]


def test_the_clock_runs_by_itself_at_speed(
    make_sim: Callable[..., SimulatorServer], http: requests.Session
) -> None:
    sim = make_sim(speed=500)
    client = make_client(sim, http)
    job = create_job(client, {"web1": "fail"})
    execution = client.start_job(ACCOUNT, job.id).execution_id
    doc = sim.simulator.wait_status(execution, {"FAILURE"}, timeout=5)
    assert doc["failed_hosts"] == ["web1"]


def test_flaky_hosts_are_reproducible_with_a_seed(
    make_sim: Callable[..., SimulatorServer], http: requests.Session
) -> None:
    def outcomes(seed: int) -> list[tuple[str, ...]]:
        sim = make_sim(seed=seed)
        client = make_client(sim, http)
        job = create_job(client, {f"web{i}": {"flaky": 0.5} for i in range(8)})
        ids = [client.start_job(ACCOUNT, job.id).execution_id for _ in range(3)]
        sim.simulator.advance_until_idle()
        result = [tuple(sim.simulator.execution(e)["failed_hosts"]) for e in ids]
        sim.close()
        return result

    first, again, other = outcomes(11), outcomes(11), outcomes(12)
    assert first == again
    assert first != other
    assert any(first) and not all(len(hosts) == 8 for hosts in first)


def test_fleet_control_scripts_a_flaky_fleet(
    sim: SimulatorServer, control: SimulatorControl, client: RunnerClient
) -> None:
    fleet = control.fleet(
        {
            "jobs": [
                {"description": "web tier", "hosts": {"web1": "ok", "web2": "unreachable_first:1"}},
                {
                    "description": "db tier",
                    "hosts": {"db1": {"fail_first": 2, "fail_message": "psql: timed out"}},
                    "executions": 2,
                },
                {"description": "idle", "hosts": ["x1"], "start": False},
            ]
        }
    )
    assert fleet["account"] == ACCOUNT
    web, db, idle = fleet["jobs"]
    assert len(web["executions"]) == 1 and len(db["executions"]) == 2 and idle["executions"] == []
    assert control.advance_until_idle() == 7
    docs = {e["execution_id"]: e for e in control.executions()}
    assert docs[web["executions"][0]]["failed_hosts"] == ["web2"]
    assert docs[db["executions"][1]]["failed_hosts"] == ["db1"]
    assert client.get_job(ACCOUNT, db["id"]).description == "db tier"
