"""The live status feed: event shape, level filters, and the callback fault modes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import requests

from app.runner import RestartHost, RunnerClient
from app.runner.documents import parse_status_event
from app.simulator import SimulatorControl, SimulatorServer
from tests.simulator.conftest import (
    ACCOUNT,
    Receiver,
    create_job,
    make_client,
)

FAILURE_EVENTS = {"runner_on_failed", "runner_on_unreachable", "runner_on_async_failed"}


def run_once(sim: SimulatorServer, client: RunnerClient, hosts: Any, callbacks: list[Any]) -> str:
    job = create_job(client, hosts, callbacks)
    execution = client.start_job(ACCOUNT, job.id).execution_id
    sim.simulator.advance_until_idle()
    assert sim.simulator.callbacks.wait_idle(5)
    return execution


def test_events_are_posted_in_the_status_event_shape(
    sim: SimulatorServer, client: RunnerClient, receiver: Receiver
) -> None:
    hosts = {
        "web1": "ok",
        "db1": {"fail_message": "psql: could not connect to server: Connection timed out", "rc": 2},
        "web2": "unreachable",
        "q1": "async_failed",
    }
    execution = run_once(sim, client, hosts, [{"url": receiver.url("all"), "level": "DEBUG"}])
    bodies = receiver.bodies("all")
    assert {r["content_type"] for r in receiver.received} == {"application/json"}
    types = [b["event_type"] for b in bodies]
    assert types[:3] == ["playbook_on_start", "playbook_on_play_start", "playbook_on_task_start"]
    assert types[-2:] == ["playbook_on_stats", "playbook_result"]
    assert {
        "runner_on_ok",
        "runner_on_failed",
        "runner_on_unreachable",
        "runner_on_async_failed",
    } <= set(types)
    assert len({b["id"] for b in bodies}) == len(bodies)
    for body in bodies:
        assert set(body) == {
            "id",
            "timestamp",
            "account_alias",
            "job_id",
            "execution_id",
            "event_type",
            "message",
            "notifications",
        }
        assert body["execution_id"] == execution and body["account_alias"] == ACCOUNT
        assert body["notifications"] == []
        parse_status_event(body)  # the shared parser accepts every one
    timestamps = [b["timestamp"] for b in bodies]
    assert timestamps == sorted(timestamps)

    by_type = {b["event_type"]: b["message"] for b in bodies}
    failed = by_type["runner_on_failed"]
    assert failed["host"] == "db1" and failed["msg"] == "non-zero return code"
    assert failed["stderr"] == "psql: could not connect to server: Connection timed out"
    assert failed["rc"] == 2 and "changed" in failed and failed["task"]
    unreachable = by_type["runner_on_unreachable"]
    assert unreachable["unreachable"] is True
    assert unreachable["msg"].startswith("Failed to connect to the host via ssh:")
    assert "Connection refused" in unreachable["msg"]
    result = by_type["playbook_result"]
    assert result["status"] == "FAILURE"
    assert result["stats"]["db1"] == {
        "ok": 3,
        "changed": 1,
        "unreachable": 0,
        "failures": 1,
        "skipped": 0,
    }
    assert result["stats"]["web2"]["unreachable"] == 1
    assert sorted(sim.simulator.execution(execution)["failed_hosts"]) == ["db1", "q1", "web2"]

    # the same records are readable from the status API
    stored = sim.simulator.status_events(ACCOUNT, bodies[0]["job_id"], execution, None, None)
    assert stored == bodies


def test_levels_filter_the_feed(
    sim: SimulatorServer, client: RunnerClient, receiver: Receiver
) -> None:
    callbacks = [
        {"url": receiver.url("debug"), "level": "DEBUG"},
        {"url": receiver.url("error"), "level": "ERROR"},
        {"url": receiver.url("result"), "level": "RESULT"},
        receiver.url("plain"),  # the 2015 form: a plain URL, level DEBUG
    ]
    run_once(sim, client, {"web1": "fail", "web2": "ok"}, callbacks)
    debug = receiver.bodies("debug")
    assert receiver.bodies("plain") == debug
    assert [b["event_type"] for b in receiver.bodies("error")] == [
        "runner_on_failed",
        "playbook_result",
    ]
    assert [b["event_type"] for b in receiver.bodies("result")] == ["playbook_result"]

    receiver.received.clear()
    run_once(sim, client, {"web1": "ok"}, callbacks)
    assert receiver.bodies("error") == []  # a successful run has no failure event
    assert [b["message"]["status"] for b in receiver.bodies("result")] == ["SUCCESS"]


def test_a_restart_run_is_fed_too(
    sim: SimulatorServer, client: RunnerClient, receiver: Receiver
) -> None:
    job = create_job(
        client, {"web1": "fail_first:1"}, [{"url": receiver.url("r"), "level": "RESULT"}]
    )
    execution = client.start_job(ACCOUNT, job.id).execution_id
    sim.simulator.advance_until_idle()
    client.restart(ACCOUNT, job.id, execution, [RestartHost("web1")])
    sim.simulator.advance_until_idle()
    assert sim.simulator.callbacks.wait_idle(5)
    assert [b["message"]["status"] for b in receiver.bodies("r")] == ["FAILURE", "SUCCESS"]


def test_dropped_callbacks(
    sim: SimulatorServer, client: RunnerClient, receiver: Receiver, control: SimulatorControl
) -> None:
    control.faults(drop_callbacks=1.0)
    execution = run_once(sim, client, {"web1": "fail"}, [receiver.url("d")])
    assert receiver.bodies("d") == []
    deliveries = control.deliveries()
    assert deliveries["counts"]["dropped"] == deliveries["counts"]["queued"] > 0
    assert sim.simulator.execution(execution)["status"] == "FAILURE"  # the API still knows


def test_duplicated_callbacks(
    sim: SimulatorServer, client: RunnerClient, receiver: Receiver, control: SimulatorControl
) -> None:
    control.faults(duplicate_callbacks=1.0)
    run_once(sim, client, {"web1": "fail"}, [{"url": receiver.url("dup"), "level": "RESULT"}])
    bodies = receiver.bodies("dup")
    assert len(bodies) == 2 and bodies[0] == bodies[1]


def test_reordered_callbacks(
    sim: SimulatorServer, client: RunnerClient, receiver: Receiver, control: SimulatorControl
) -> None:
    control.faults(reorder_callbacks=0.5)
    execution = run_once(sim, client, {"web1": "fail", "web2": "ok"}, [receiver.url("o")])
    bodies = receiver.bodies("o")
    stored = sim.simulator.status_events(ACCOUNT, bodies[0]["job_id"], execution, None, None)
    assert isinstance(stored, list)
    assert sorted(b["id"] for b in bodies) == sorted(e["id"] for e in stored)
    assert [b["id"] for b in bodies] != [e["id"] for e in stored]
    assert any(d["reordered"] for d in control.deliveries()["log"])


def test_callback_faults_are_reproducible_with_a_seed(
    make_sim: Callable[..., SimulatorServer], http: requests.Session, receiver: Receiver
) -> None:
    def delivered(seed: int, name: str) -> list[str]:
        sim = make_sim(seed=seed, faults={"drop_callbacks": 0.3, "duplicate_callbacks": 0.3})
        client = make_client(sim, http)
        run_once(sim, client, {"web1": "fail", "web2": "ok"}, [receiver.url(name)])
        sim.close()
        return [f"{b['event_type']}:{b['message'].get('host')}" for b in receiver.bodies(name)]

    assert delivered(5, "a") == delivered(5, "b")


def test_unreachable_receiver_does_not_stall_the_service(
    sim: SimulatorServer, client: RunnerClient, control: SimulatorControl
) -> None:
    execution = run_once(sim, client, {"web1": "ok"}, ["http://127.0.0.1:9/closed"])
    assert sim.simulator.execution(execution)["status"] == "SUCCESS"
    assert control.deliveries()["counts"]["failed"] > 0


def test_remote_callbacks_are_refused_by_default(
    sim: SimulatorServer, client: RunnerClient, control: SimulatorControl
) -> None:
    run_once(
        sim,
        client,
        {"web1": "ok"},
        [{"url": "http://203.0.113.9/hook/secret-token", "level": "RESULT"}],
    )
    log = control.deliveries()["log"]
    assert [d["outcome"] for d in log] == ["refused"]
    assert "secret-token" not in str(log)
