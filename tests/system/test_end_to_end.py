"""The whole loop over real HTTP: the simulator's feed → receiver → policy → dispatcher →
the simulator's restart endpoint → the next run's feed, with duplicated and reordered
callbacks, on both databases."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from werkzeug.serving import make_server

from app.dispatcher import start_background
from app.extensions import get_runtime
from app.simulator import SimulatorConfig, SimulatorServer
from tests.conftest import CALLBACK_TOKEN

pytestmark = pytest.mark.slow

USER, PASSWORD, ACCOUNT = "e2e@example.com", "e2e-pa55word-xyz", "E2E1"


@pytest.fixture
def live(make_app: Callable[..., Flask], policy_file: Path) -> Iterator[tuple[Flask, str, Any]]:
    config = SimulatorConfig.single_user(
        USER,
        PASSWORD,
        ACCOUNT,
        seed=5,
        speed=40,
        faults={"duplicate_callbacks": 0.3, "reorder_callbacks": 0.3},
    )
    sim = SimulatorServer(config).start()
    policy_file.write_text(
        "version: 1\n"
        "defaults: {backoff: {initial: 0s}}\n"
        "rules:\n"
        "  - name: no-db-migrations\n"
        "    when: {job: 'db-migrate*'}\n"
        "    action: skip\n"
    )
    app = make_app(
        runner_api_url=sim.url,
        runner_auth_url=sim.auth_url,
        runner_username=USER,
        runner_password=PASSWORD,
        dispatch_interval=0.05,
        reconcile_interval=3600.0,
    )
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    background = start_background(get_runtime(app))
    assert background is not None
    try:
        yield app, f"http://127.0.0.1:{server.server_port}/callbacks/{CALLBACK_TOKEN}", sim
    finally:
        background.stop()
        server.shutdown()
        server.server_close()
        sim.close()


def wait_for(check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError("not reached in time")


def test_failed_hosts_are_restarted_and_the_next_run_recorded(
    live: tuple[Flask, str, Any], api_headers: dict[str, str]
) -> None:
    app, callback, sim = live
    client = app.test_client()
    fleet = sim.simulator.create_fleet(
        {
            "account": ACCOUNT,
            "callbacks": [{"url": callback, "level": "DEBUG"}],
            "jobs": [
                {
                    "description": "deploy web tier",
                    "hosts": {"web1": "ok", "web2": "fail_first:1", "web3": "unreachable_first:1"},
                },
                {"description": "db-migrate orders", "hosts": {"db1": "fail"}},
            ],
        }
    )
    web_exec = fleet["jobs"][0]["executions"][0]
    db_exec = fleet["jobs"][1]["executions"][0]

    def detail(execution_id: str) -> Any:
        response = client.get(f"/api/v1/executions/{execution_id}", headers=api_headers)
        return response.get_json() if response.status_code == 200 else None

    wait_for(
        lambda: (
            (detail(web_exec) or {}).get("status") == "SUCCESS"
            and detail(web_exec)["run_count"] == 2
        )
    )
    body = detail(web_exec)
    assert [t["status"] for t in body["timers"]] == ["FAILURE", "SUCCESS"]
    ((decision),) = body["decisions"]
    assert decision["action"] == "restart"
    assert decision["hosts"] == ["web2", "web3"]
    assert {f["host"]: f["failure_class"] for f in body["host_failures"]} == {
        "web2": "task_failed",
        "web3": "unreachable",
    }
    (restart,) = body["restarts"]
    assert (restart["state"], restart["result"]) == ("done", "succeeded")
    assert sim.simulator.calls.restarts_of(web_exec) == {"received": 1, "applied": 1}

    # The migration job is never restarted: its description is known by then and matches.
    wait_for(lambda: bool((detail(db_exec) or {}).get("decisions")))
    db = detail(db_exec)
    assert [d["rule"] for d in db["decisions"]] == ["no-db-migrations"]
    assert db["restarts"] == []
    assert sim.simulator.calls.restarts_of(db_exec)["received"] == 0
