"""A partial restart that leaves a failed host out, end to end on both databases: the newest
run succeeds, and the API, the list and the execution page still say the host is failed."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from app.dispatcher import start_background
from app.extensions import get_runtime
from app.simulator import SimulatorServer, fleet_job
from tests.conftest import API_TOKEN
from tests.dispatcher.conftest import ACCOUNT, runner_settings, serve, wait_until
from tests.helpers import save_user, sign_in

pytestmark = pytest.mark.slow

HEADERS = {"Authorization": f"Bearer {API_TOKEN}"}
NETWORK_ONLY = """\
version: 1
defaults: {action: skip, backoff: {initial: 0s}}
rules:
  - name: flaky-network
    when: {failure: [unreachable]}
    action: restart
    hosts: failed
limits: {per_job: null, per_account: null, global: null, per_host: null}
circuit_breaker: null
"""


def test_a_host_left_out_of_a_restart_stays_failed_after_the_next_run_succeeds(
    make_sim: Callable[..., SimulatorServer],
    make_app: Callable[..., Flask],
    policy_file: Path,
) -> None:
    sim = make_sim(speed=20)
    policy_file.write_text(NETWORK_ONLY)
    app = make_app(**runner_settings(sim, reconcile_interval=3600.0))
    client = app.test_client()
    with serve(app) as callback_url:
        background = start_background(get_runtime(app))
        try:
            scripts = {"web1": "ok", "web2": "unreachable_first:1", "web3": "fail"}
            job = sim.simulator.create_job(
                ACCOUNT, fleet_job("deploy web tier", scripts, [callback_url])
            )
            execution_id = sim.simulator.start_job(ACCOUNT, job["id"], {})["execution_id"]

            def settled() -> dict[str, Any] | None:
                answer = client.get(f"/api/v1/executions/{execution_id}", headers=HEADERS)
                body: dict[str, Any] | None = (
                    answer.get_json() if answer.status_code == 200 else None
                )
                return body if body and body["status"] == "SUCCESS" else None

            wait_until(lambda: settled() is not None, timeout=60)
            assert sim.simulator.callbacks.wait_idle(10)
        finally:
            background.stop()
    body = settled()
    assert body is not None

    # Run 1 failed on web2 (unreachable) and web3 (task failed); the rule restarted web2 only,
    # and run 2, on web2 alone, succeeded.
    assert [t["status"] for t in body["timers"]] == ["FAILURE", "SUCCESS"]
    (restart,) = body["restarts"]
    assert restart["hosts"] == ["web2"]
    assert body["failed_hosts"] == []
    assert body["left_failed_hosts"] == [
        {
            "host": "web3",
            "run": 0,
            "failure_class": "task_failed",
            "message": "non-zero return code",
            "reason": "not matched by rule flaky-network",
        }
    ]
    save_user(app, "olivia", "operator", "a-long-test-password")
    sign_in(client, "olivia", "a-long-test-password")
    page = client.get(f"/admin/executions/{execution_id}").get_data(as_text=True)
    listing = client.get("/admin/").get_data(as_text=True)
    assert 'data-test="left-failed"' in page
    assert "though the newest run succeeded" in page
    assert "<code>web3</code> failed in run 1 and was left out of the restart" in page
    assert "left failed: web3" in listing
