"""The variant switches: what the real service may do where its docs are silent
(docs/simulator.md). Each is set at start (SimulatorConfig, CLI) or at run time (control API)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import requests
from click.testing import CliRunner

from app.runner import RunnerClient, RunnerNotFound, RunnerRejected
from app.simulator import SimulatorConfig, SimulatorControl, SimulatorServer, Variants
from app.simulator import commands as simulator_commands
from app.simulator.config import SettingsError
from app.simulator.control import SimulatorControlError
from tests.simulator.conftest import ACCOUNT, Receiver, bearer, create_job, make_client

START = 1_700_000_000.25  # a fractional second, to see it kept


class FakeClock:
    """The simulator's clock, moved by the test."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def minutes(self, n: float) -> None:
        self.now += n * 60


# -- setting them ---------------------------------------------------------------------------


def test_every_switch_is_off_by_default(sim: SimulatorServer, control: SimulatorControl) -> None:
    off = {
        "execution_get_404": False,
        "lists_oldest_first": False,
        "expire_runs": False,
        "timestamps_in_seconds": False,
        "status_page": None,
    }
    assert control.variants() == off
    assert http_state(control)["variants"] == off
    assert SimulatorConfig().variants() == Variants()


def http_state(control: SimulatorControl) -> dict[str, Any]:
    state: dict[str, Any] = control._call("GET", "/state")
    return state


def test_control_sets_merges_clears_and_reset_restores(
    make_sim: Callable[..., SimulatorServer], http: requests.Session
) -> None:
    sim = make_sim(lists_oldest_first=True)
    control = SimulatorControl(http, sim.url)
    assert control.variants()["lists_oldest_first"] is True
    changed = control.variants(expire_runs=True, status_page=False)
    assert changed["expire_runs"] is True and changed["status_page"] is False
    assert changed["lists_oldest_first"] is True  # merged, not replaced
    assert sim.simulator.variants.expire_runs is True
    control.reset()  # back to the configured switches
    assert control.variants()["expire_runs"] is False
    assert control.variants()["lists_oldest_first"] is True
    assert control.clear_variants()["lists_oldest_first"] is False


@pytest.mark.parametrize(
    "changes",
    [{"expire_runs": "yes"}, {"status_page": 1}, {"lists_oldest_first": None}, {"colour": True}],
)
def test_bad_switches_are_refused(
    sim: SimulatorServer, control: SimulatorControl, changes: dict[str, Any]
) -> None:
    with pytest.raises(SimulatorControlError, match="HTTP 400"):
        control.variants(**changes)
    with pytest.raises((SettingsError, TypeError)):  # a TypeError for an unknown field
        SimulatorConfig(**changes)


def test_command_line_flags_set_the_switches(monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[SimulatorConfig] = []

    class Server:
        url = "http://127.0.0.1:1"
        auth_url = url + "/v2/authentication/login"

        def __init__(self, config: SimulatorConfig, host: str, port: int) -> None:
            started.append(config)
            self.simulator = type("Sim", (), {"seed": config.seed})()

        def serve_forever(self) -> None:
            pass

    monkeypatch.setattr(simulator_commands, "SimulatorServer", Server)
    flags = [
        "--execution-get-404",
        "--lists-oldest-first",
        "--expire-runs",
        "--timestamps-in-seconds",
        "--status-array",
    ]
    result = CliRunner().invoke(simulator_commands.simulator_command, [*flags, "--seed", "1"])
    assert result.exit_code == 0, result.output
    assert started[0].variants() == Variants(True, True, True, True, False)
    assert '"status_page": false' in result.output
    result = CliRunner().invoke(simulator_commands.simulator_command, ["--status-page"])
    assert started[1].variants() == Variants(status_page=True)
    result = CliRunner().invoke(simulator_commands.simulator_command, [])
    assert started[2].variants() == Variants() and "variants" not in result.output


# -- execution_get_404 ----------------------------------------------------------------------


def test_execution_get_404(
    sim: SimulatorServer, client: RunnerClient, control: SimulatorControl, http: requests.Session
) -> None:
    job = create_job(client, ["web1"])
    execution = client.start_job(ACCOUNT, job.id).execution_id
    assert client.get_execution(ACCOUNT, job.id, execution).status == "PENDING"
    control.variants(execution_get_404=True)
    with pytest.raises(RunnerNotFound):
        client.get_execution(ACCOUNT, job.id, execution)
    raw = http.get(
        f"{sim.url}/jobs/{ACCOUNT}/{job.id}/executions/{execution}",
        headers=bearer(client),
        timeout=5,
    )
    assert raw.status_code == 404
    assert raw.json() == {"message": "No HTTP resource was found that matches the request URI."}
    # the lists still show it, and everything else works on it
    assert [d.execution_id for d in client.iter_job_executions(ACCOUNT, job.id)] == [execution]
    assert [d.execution_id for d in client.iter_account_executions(ACCOUNT)] == [execution]
    sim.simulator.advance_until_idle()
    assert next(iter(client.iter_job_executions(ACCOUNT, job.id))).status == "SUCCESS"


# -- lists_oldest_first ---------------------------------------------------------------------


def test_lists_oldest_first(
    make_sim: Callable[..., SimulatorServer], http: requests.Session
) -> None:
    sim = make_sim(lists_oldest_first=True)
    client = make_client(sim, http)
    first, second = create_job(client, ["a"]), create_job(client, ["b"])
    ids = [client.start_job(ACCOUNT, job.id).execution_id for job in (first, second, first)]
    assert [d.execution_id for d in client.iter_account_executions(ACCOUNT, size=2)] == ids
    page = client.list_account_executions(ACCOUNT, page=0, size=2)
    assert [d.execution_id for d in page.items] == ids[:2] and page.total_size == 3
    assert [d.execution_id for d in client.iter_job_executions(ACCOUNT, first.id)] == [
        ids[0],
        ids[2],
    ]
    sim.simulator.set_variants({"lists_oldest_first": False})
    assert [d.execution_id for d in client.iter_account_executions(ACCOUNT)] == ids[::-1]


# -- expire_runs ----------------------------------------------------------------------------


def expiring_sim(
    make_sim: Callable[..., SimulatorServer], http: requests.Session, **options: Any
) -> tuple[SimulatorServer, RunnerClient, FakeClock]:
    clock = FakeClock()
    sim = make_sim(clock=clock, **options)
    return sim, make_client(sim, http), clock


def start_running(sim: SimulatorServer, client: RunnerClient, ttl: int | None) -> tuple[str, str]:
    job = client.create_job(
        ACCOUNT, {"description": "slow", "executionTtl": ttl, "hosts": [{"id": "web1"}]}
    )
    execution = client.start_job(ACCOUNT, job.id).execution_id
    sim.simulator.advance(3)  # INITIALIZING, RUNNING, a task done
    assert sim.simulator.execution(execution)["status"] == "RUNNING"
    return job.id, execution


def test_expire_runs_ends_a_long_run_expired(
    make_sim: Callable[..., SimulatorServer], http: requests.Session, receiver: Receiver
) -> None:
    sim, client, clock = expiring_sim(make_sim, http, expire_runs=True)
    job_id, execution = start_running(sim, client, ttl=30)
    clock.minutes(30)  # not longer than the TTL yet
    sim.simulator.advance()
    assert sim.simulator.execution(execution)["status"] == "RUNNING"
    clock.minutes(0.5)
    sim.simulator.advance()
    doc = sim.simulator.execution(execution)
    assert doc["status"] == "EXPIRED" and doc["failed_hosts"] == []
    assert doc["timers"][0]["end"] == int(clock.now * 1000)
    events = sim.simulator.status_events(ACCOUNT, job_id, execution, None, None)
    assert isinstance(events, list)
    results = [e["message"] for e in events if e["event_type"] == "playbook_result"]
    assert results == [
        {
            "status": "EXPIRED",
            "stats": {},
            "msg": "The execution ran longer than its executionTtl of 30 minutes.",
        }
    ]
    assert "playbook_on_stats" not in {e["event_type"] for e in events}
    assert sim.simulator.advance() == 0  # it is over: nothing runs any more
    with pytest.raises(RunnerRejected, match="EXPIRED"):
        client.restart(ACCOUNT, job_id, execution)


def test_a_null_ttl_is_180_minutes(
    make_sim: Callable[..., SimulatorServer], http: requests.Session
) -> None:
    sim, client, clock = expiring_sim(make_sim, http, expire_runs=True)
    _, execution = start_running(sim, client, ttl=None)
    clock.minutes(180)
    sim.simulator.advance()
    assert sim.simulator.execution(execution)["status"] == "RUNNING"
    clock.minutes(1)
    sim.simulator.advance()
    assert sim.simulator.execution(execution)["status"] == "EXPIRED"


def test_runs_never_expire_with_the_switch_off(
    make_sim: Callable[..., SimulatorServer], http: requests.Session
) -> None:
    sim, client, clock = expiring_sim(make_sim, http)
    _, execution = start_running(sim, client, ttl=1)
    clock.minutes(600)
    sim.simulator.advance_until_idle()
    assert sim.simulator.execution(execution)["status"] == "SUCCESS"


def test_a_pending_execution_does_not_expire(
    make_sim: Callable[..., SimulatorServer], http: requests.Session
) -> None:
    sim, client, clock = expiring_sim(make_sim, http, expire_runs=True, max_running_per_account=1)
    _, running = start_running(sim, client, ttl=1)
    job = create_job(client, ["web2"])
    waiting = client.start_job(ACCOUNT, job.id).execution_id
    clock.minutes(2)
    sim.simulator.advance()  # the running one expires; the waiting one gets the slot
    assert sim.simulator.execution(running)["status"] == "EXPIRED"
    sim.simulator.advance_until_idle()
    assert sim.simulator.execution(waiting)["status"] == "SUCCESS"


# -- timestamps_in_seconds ------------------------------------------------------------------


def test_timestamps_in_seconds(
    make_sim: Callable[..., SimulatorServer], http: requests.Session, receiver: Receiver
) -> None:
    clock = FakeClock()
    sim = make_sim(clock=clock, timestamps_in_seconds=True)
    client = make_client(sim, http)
    job = create_job(client, {"web1": "fail"}, [receiver.url("s")])
    execution = client.start_job(ACCOUNT, job.id).execution_id
    sim.simulator.advance_until_idle()
    assert sim.simulator.callbacks.wait_idle(5)
    stored = sim.simulator.status_events(ACCOUNT, job.id, execution, None, None)
    assert stored == receiver.bodies("s")  # the records the feed carried
    assert {e["timestamp"] for e in stored} == {START}  # seconds, the fraction kept

    sim.simulator.set_variants({"timestamps_in_seconds": False})
    client.restart(ACCOUNT, job.id, execution)
    sim.simulator.advance_until_idle()
    events = sim.simulator.status_events(ACCOUNT, job.id, execution, None, None)
    assert isinstance(events, list)
    assert events[-1]["timestamp"] == int(START * 1000)  # milliseconds again, from then on


# -- status_page ----------------------------------------------------------------------------


def test_status_page_forms(
    sim: SimulatorServer, http: requests.Session, client: RunnerClient
) -> None:
    job = create_job(client, {"web1": "ok"})
    execution = client.start_job(ACCOUNT, job.id).execution_id
    sim.simulator.advance_until_idle()
    headers = bearer(client)
    for url in (
        f"{sim.url}/status/{ACCOUNT}/job/{job.id}/execution/{execution}",
        f"{sim.url}/status/{ACCOUNT}/job/{job.id}",
    ):
        events = http.get(url, headers=headers, timeout=5).json()
        assert isinstance(events, list) and len(events) > 4

        sim.simulator.set_variants({"status_page": True})  # always a page
        assert http.get(url, headers=headers, timeout=5).json() == {
            "totalSize": len(events),
            "page": 0,
            "size": 100,
            "results": events,
        }
        paged = http.get(url + "?page=1&size=2", headers=headers, timeout=5).json()
        assert paged == {"totalSize": len(events), "page": 1, "size": 2, "results": events[2:4]}

        sim.simulator.set_variants({"status_page": False})  # always a bare array
        assert http.get(url + "?page=1&size=2", headers=headers, timeout=5).json() == events[2:4]
        assert http.get(url, headers=headers, timeout=5).json() == events

        sim.simulator.set_variants({"status_page": None})  # the default: a page when asked
        assert "results" in http.get(url + "?size=2", headers=headers, timeout=5).json()
