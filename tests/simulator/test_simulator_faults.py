"""Every fault mode seen through the Runner client, and the holds the dispatcher tests use."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import requests
from flask.testing import FlaskClient

from app.runner import (
    RestartHost,
    RunnerClient,
    RunnerError,
    RunnerRejected,
    RunnerTimeout,
    RunnerUnavailable,
)
from app.runner.client import RunnerClient as Client
from app.simulator import SimulatorControl, SimulatorServer, create_simulator_app, simulator_of
from tests.simulator.conftest import ACCOUNT, PASSWORD, USER, create_job, make_client

SSH_KEY = "LS0tLS1CRUdJTiBPUEVOU1NIIFBSSVZBVEUgS0VZLS0tLS0Kc2ltdWxhdG9yLXRlc3Qta2V5"


def failed_execution(sim: SimulatorServer, client: RunnerClient) -> tuple[str, str]:
    job = create_job(client, {"web1": "fail_first:1", "web2": "ok"})
    execution = client.start_job(ACCOUNT, job.id).execution_id
    sim.simulator.advance_until_idle()
    return job.id, execution


class Background:
    """A call run in a thread, so the test can act while it is held."""

    def __init__(self, call: Callable[[], Any]) -> None:
        self.result: Any = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(call,))
        self._thread.start()

    def _run(self, call: Callable[[], Any]) -> None:
        try:
            self.result = call()
        except BaseException as exc:  # noqa: BLE001  (handed to the test)
            self.error = exc

    def join(self) -> None:
        self._thread.join(timeout=10)
        assert not self._thread.is_alive()


# -- 5xx ------------------------------------------------------------------------------------


def test_a_5xx_burst_is_retried_for_reads(
    sim: SimulatorServer, client: RunnerClient, control: SimulatorControl
) -> None:
    job_id, execution = failed_execution(sim, client)
    control.faults(fail_next=2, error_status=500, match=r"^GET ")
    assert client.get_execution(ACCOUNT, job_id, execution).status == "FAILURE"
    assert control.calls()["requests"]["runner_api.get_execution"] == 3
    assert control.faults()["injected"]["errors"] == 2


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_restart_answered_5xx_is_not_retried(
    sim: SimulatorServer, client: RunnerClient, control: SimulatorControl, status: int
) -> None:
    job_id, execution = failed_execution(sim, client)
    control.faults(error_rate=1.0, error_status=status, match="/restart$")
    with pytest.raises(RunnerUnavailable) as caught:
        client.restart(ACCOUNT, job_id, execution)
    assert caught.value.status_code == status and caught.value.sent is True
    assert caught.value.message  # parsed from JSON or from the HTML error page
    calls = control.calls()["restart"]
    assert calls["received"] == 1 and calls["applied"] == 0
    assert sim.simulator.execution(execution)["status"] == "FAILURE"


def test_error_rate_is_a_seeded_share(
    make_sim: Callable[..., SimulatorServer], http: requests.Session
) -> None:
    def answers(seed: int) -> list[int]:
        sim = make_sim(seed=seed, faults={"error_rate": 0.5})
        token = http.post(sim.auth_url, json={"username": USER, "password": PASSWORD}, timeout=5)
        statuses = [token.status_code]
        for _ in range(30):
            statuses.append(http.get(f"{sim.url}/jobs/{ACCOUNT}", timeout=5).status_code)
        sim.close()
        return statuses

    first = answers(3)
    assert first == answers(3)
    assert 5 <= first.count(503) <= 25


# -- latency and hangs ----------------------------------------------------------------------


def test_latency_is_added(
    sim: SimulatorServer, client: RunnerClient, control: SimulatorControl
) -> None:
    client.list_account_executions(ACCOUNT)
    control.faults(latency_ms=150)
    started = time.monotonic()
    client.list_account_executions(ACCOUNT)
    assert time.monotonic() - started >= 0.15


def test_a_hang_longer_than_the_read_timeout_is_a_timeout(
    sim: SimulatorServer, http: requests.Session, control: SimulatorControl
) -> None:
    client = make_client(sim, http, read_timeout=0.2)
    job_id, execution = failed_execution(sim, client)
    control.faults(hang_next=1, hang_seconds=0.6, match="/restart$")
    with pytest.raises(RunnerTimeout) as caught:
        client.restart(ACCOUNT, job_id, execution)
    assert caught.value.sent is True
    # the hung call is applied once the hang ends: it "may have been applied"
    deadline = time.monotonic() + 5
    while sim.simulator.execution(execution)["status"] != "PENDING":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert control.calls()["restart"] == control.calls()["restart"] | {"received": 1, "applied": 1}


def test_hung_reads_are_retried(
    sim: SimulatorServer, http: requests.Session, control: SimulatorControl
) -> None:
    client = make_client(sim, http, read_timeout=0.2)
    client.list_account_executions(ACCOUNT)
    control.faults(hang_next=1, hang_seconds=1.0)
    assert client.list_account_executions(ACCOUNT).items == ()
    assert control.calls()["requests"]["runner_api.list_account_executions"] == 3


def test_connection_refused_was_not_sent(http: requests.Session) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again before the call: nothing listens there
    url = f"http://127.0.0.1:{port}"
    client = Client(
        http, url, url + "/v2/authentication/login", None, None, token="t", connect_timeout=0.5
    )
    with pytest.raises(RunnerUnavailable) as caught:
        client.restart(ACCOUNT, "job", "execution")
    assert caught.value.sent is False and caught.value.status_code is None


# -- holds on restart -----------------------------------------------------------------------


def test_hold_before_then_fail_means_never_applied(
    sim: SimulatorServer, client: RunnerClient, control: SimulatorControl
) -> None:
    job_id, execution = failed_execution(sim, client)
    control.faults(hold_restart="before", hold_count=1)
    call = Background(lambda: client.restart(ACCOUNT, job_id, execution))
    assert control.wait_held(1, timeout=5)
    (held,) = control.held()
    assert held["execution_id"] == execution and held["stage"] == "before"
    assert sim.simulator.execution(execution)["status"] == "FAILURE"  # not applied yet

    assert control.release(execution, action="fail") == 1
    call.join()
    assert isinstance(call.error, RunnerUnavailable) and call.error.status_code == 503
    assert sim.simulator.execution(execution)["status"] == "FAILURE"

    # hold_count=1: the next call goes straight through
    assert client.restart(ACCOUNT, job_id, execution).status == "PENDING"
    restarts = control.calls()["restart"]
    assert restarts["by_execution"][execution] == {"received": 2, "applied": 1}
    assert [e["status"] for e in restarts["log"]] == [503, 200]


def test_hold_after_means_applied_with_the_answer_held(
    sim: SimulatorServer, client: RunnerClient, control: SimulatorControl
) -> None:
    job_id, execution = failed_execution(sim, client)
    control.faults(hold_restart="after")
    call = Background(lambda: client.restart(ACCOUNT, job_id, execution, [RestartHost("web1")]))
    assert control.wait_held(1, timeout=5)
    assert sim.simulator.execution(execution)["status"] == "PENDING"  # applied already
    assert control.calls()["restart"]["applied"] == 1

    assert control.release(action="proceed") == 1
    call.join()
    assert call.error is None and call.result.status == "PENDING"

    # while held, a second restart of the same execution is refused: it is no longer failed
    with pytest.raises(RunnerRejected):
        client.restart(ACCOUNT, job_id, execution)
    control.release()


def test_holds_are_released_on_close(
    make_sim: Callable[..., SimulatorServer], http: requests.Session
) -> None:
    sim = make_sim(faults={"hold_restart": "before"})
    client = make_client(sim, http)
    job_id, execution = failed_execution(sim, client)
    call = Background(lambda: client.restart(ACCOUNT, job_id, execution))
    assert sim.simulator.faults.wait_held(1, timeout=5)
    started = time.monotonic()
    sim.close()
    call.join()
    assert time.monotonic() - started < 3
    assert isinstance(call.error, RunnerError)


# -- bookkeeping ----------------------------------------------------------------------------


def test_restart_calls_are_counted_and_keys_never_kept(
    sim: SimulatorServer, client: RunnerClient, control: SimulatorControl, http: requests.Session
) -> None:
    job_id, execution = failed_execution(sim, client)
    client.restart(ACCOUNT, job_id, execution, [RestartHost("web1", SSH_KEY)], SSH_KEY)
    sim.simulator.advance_until_idle()

    (entry,) = control.calls()["restart"]["log"]
    assert entry["hosts"] == ["web1"] and entry["ssh_key"] is True
    assert entry["host_keys"] == ["web1"] and entry["status"] == 200 and entry["applied"]
    for path in ("/_sim/calls", "/_sim/executions", "/_sim/state", "/_sim/deliveries"):
        assert SSH_KEY not in http.get(sim.url + path, timeout=5).text
    events = sim.simulator.status_events(ACCOUNT, job_id, execution, None, None)
    assert SSH_KEY not in str(events)
    assert SSH_KEY not in str(client.get_job(ACCOUNT, job_id).definition)


def test_reset_forgets_everything_but_tokens(
    sim: SimulatorServer, client: RunnerClient, control: SimulatorControl
) -> None:
    job_id, execution = failed_execution(sim, client)
    client.restart(ACCOUNT, job_id, execution)
    control.faults(error_rate=0.5)
    control.reset()
    assert control.executions() == []
    assert control.calls()["restart"]["received"] == 0
    assert control.faults()["error_rate"] == 0.0
    assert client.list_account_executions(ACCOUNT).items == ()
    assert client.login_count == 1


def test_bad_fault_switches_are_refused(control: SimulatorControl) -> None:
    for bad in (
        {"error_rate": 2},
        {"hold_restart": "sometimes"},
        {"nonsense": 1},
        {"match": "("},
        {"error_status": 404},
    ):
        with pytest.raises(RuntimeError, match="HTTP 400"):
            control.faults(**bad)


def test_control_api_refuses_non_loopback_clients() -> None:
    app = create_simulator_app()
    try:
        remote: FlaskClient = app.test_client()
        response = remote.get("/_sim/calls", environ_base={"REMOTE_ADDR": "192.0.2.7"})
        assert response.status_code == 403
        local = remote.get("/_sim/health", environ_base={"REMOTE_ADDR": "127.0.0.1"})
        assert local.status_code == 200
        # the Runner API itself answers anyone (with a token)
        api = remote.get(f"/jobs/{ACCOUNT}", environ_base={"REMOTE_ADDR": "192.0.2.7"})
        assert api.status_code == 401
    finally:
        simulator_of(app).close()
