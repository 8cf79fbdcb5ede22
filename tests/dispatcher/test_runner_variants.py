"""What the real Runner may do where its docs are silent (docs/runner.md), end to end: the
simulator's variant switches turned on, respawn's reconciler, receiver and dispatcher over
real HTTP, on both databases. Each test counts what reached the simulator."""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask
from sqlalchemy import func, select

from app.dispatcher import Dispatcher, start_background
from app.extensions import get_runtime
from app.models import Decision, Restart
from app.simulator import SimulatorControl, SimulatorServer, fleet_job
from tests.conftest import API_TOKEN
from tests.dispatcher.conftest import (
    ACCOUNT,
    POLICY,
    decide_from_feed,
    drain,
    failing_fleet,
    reconcile,
    runner_client,
    runner_settings,
    serve,
    wait_until,
)
from tests.helpers import transaction

pytestmark = pytest.mark.slow

HEADERS = {"Authorization": f"Bearer {API_TOKEN}"}
BAD_PASSWORD = 'FATAL: password authentication failed for user "app"'
DISK_FULL = "No space left on device"
MESSAGE_POLICY = (
    "version: 1\n"
    "defaults: {action: skip, backoff: {initial: 0s}}\n"
    "rules:\n"
    "  - name: db-password-rejected\n"
    "    when: {message: 'password authentication failed'}\n"
    "    action: restart\n"
    "{extra}"
    "limits: {per_job: null, per_account: null, global: null, per_host: null}\n"
    "circuit_breaker: null\n"
)


class Clock:
    """A simulator's clock, moved by the test."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def run_until_idle(sim: SimulatorServer, clock: Clock, seconds_per_tick: float = 1.0) -> None:
    """Tick until nothing runs, the clock moving on with each tick (so timers differ)."""
    for _ in range(10_000):
        clock.now += seconds_per_tick
        if sim.simulator.tick() == 0:
            return
    raise AssertionError("the simulator is still busy")


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


def detail(app: Flask, execution_id: str) -> Any:
    body = detail_if_known(app, execution_id)
    assert body is not None, f"respawn does not know {execution_id}"
    return body


def detail_if_known(app: Flask, execution_id: str) -> Any:
    response = app.test_client().get(f"/api/v1/executions/{execution_id}", headers=HEADERS)
    if response.status_code == 404:
        return None
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def stored_events(app: Flask, execution_id: str) -> list[dict[str, Any]]:
    response = app.test_client().get(
        f"/api/v1/executions/{execution_id}/events?limit=500", headers=HEADERS
    )
    assert response.status_code == 200
    body = response.get_json()
    assert body["next_cursor"] is None
    items: list[dict[str, Any]] = body["items"]
    return items


def count(app: Flask, model: type[Decision] | type[Restart]) -> int:
    with transaction(app) as session:
        return session.scalar(select(func.count()).select_from(model)) or 0


def requests_to(control: SimulatorControl, endpoint: str) -> int:
    counts: dict[str, int] = control.calls()["requests"]
    return counts.get(f"runner_api.{endpoint}", 0)


def a_real_date(value: str | None) -> dt.datetime:
    """An API timestamp that is a date of today's world, not one near 1970."""
    assert value is not None
    moment = dt.datetime.fromisoformat(value)
    assert abs(moment - dt.datetime.now(dt.UTC)) < dt.timedelta(days=1), value
    return moment


# -- execution_get_404 ----------------------------------------------------------------------


def test_execution_path_404_is_confirmed_in_the_jobs_list_and_each_restart_sent_once(
    rapp: Flask,
    sim: SimulatorServer,
    control: SimulatorControl,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With `GET .../executions/{id}` answering 404 for every execution, no restart is closed
    as "gone": each is checked in the job's executions list and sent once; one restarted
    elsewhere is seen as such; the fallback is noted once (log and /readyz)."""
    control.variants(execution_get_404=True)
    executions = failing_fleet(control, executions=3)
    assert reconcile(rapp).restarts_queued == 3  # the reconciler lists; no single GET needed
    assert requests_to(control, "get_execution") == 0
    elsewhere, *ours = executions
    sim.simulator.restart(ACCOUNT, sim.simulator.execution(elsewhere)["job_id"], elsewhere, {})
    caplog.set_level(logging.WARNING, logger="app.runner.client")

    drain(rapp, Dispatcher(get_runtime(rapp), runner_client(rapp)))

    calls = control.calls()["restart"]
    assert calls["by_execution"] == {eid: {"received": 1, "applied": 1} for eid in ours}
    for execution_id in ours:
        (restart,) = detail(rapp, execution_id)["restarts"]
        assert (restart["state"], restart["outcome"], restart["attempts"]) == (
            "done",
            "restarted",
            1,
        )
        assert sim.simulator.execution(execution_id)["restarts"] == 1
    (restart,) = detail(rapp, elsewhere)["restarts"]
    assert (restart["state"], restart["outcome"]) == ("not_needed", "already_restarted")
    # The path was tried once; every check (one per restart) read the job's list.
    assert requests_to(control, "get_execution") == 1
    assert requests_to(control, "list_job_executions") == 3
    warnings = [r for r in caplog.records if "answers 404" in r.getMessage()]
    assert len(warnings) == 1
    notes = rapp.test_client().get("/readyz").get_json()["checks"]["notes"]
    assert list(notes) == ["execution_path"]
    assert "verifying executions by listing" in notes["execution_path"]
    # The reconciler goes on by the lists: nothing new to decide, the path not tried again.
    assert reconcile(rapp).restarts_queued == 0
    assert requests_to(control, "get_execution") == 1


# -- lists_oldest_first ---------------------------------------------------------------------


def test_oldest_first_lists_longer_than_a_page_are_read_back_to_the_window_start(
    make_sim: Callable[..., SimulatorServer],
    make_app: Callable[..., Flask],
    policy_file: Path,
    http: requests.Session,
) -> None:
    """Executions listed oldest first over four pages, every callback dropped: the reconciler
    reads back from the last page to the window's start, finds every failure inside the
    window and none before it, and each is restarted once; no page cap is reported."""
    now = time.time()
    clock = Clock(now - 8 * 3600)  # the old executions end before the 6 h window
    sim = make_sim(clock=clock, lists_oldest_first=True)
    control = SimulatorControl(http, sim.url)
    policy_file.write_text(POLICY)
    app = make_app(**runner_settings(sim))
    with serve(app) as callback_url:
        control.faults(drop_callbacks=1.0)

        def fleet(jobs: list[tuple[str, str, int]]) -> dict[str, list[str]]:
            created = control.fleet(
                {
                    "account": ACCOUNT,
                    "callbacks": [{"url": callback_url, "level": "DEBUG"}],
                    "jobs": [
                        {"description": name, "hosts": {f"{name}-1": script}, "executions": n}
                        for name, script, n in jobs
                    ],
                }
            )
            run_until_idle(sim, clock)
            return {job["description"]: job["executions"] for job in created["jobs"]}

        old = fleet([("old-a", "fail", 70), ("old-b", "ok", 70), ("old-c", "fail", 70)])
        clock.now = now - 600  # the new ones run in the last ten minutes
        new = fleet([("new-a", "fail", 40), ("new-b", "ok", 80)])
        assert control.deliveries()["counts"]["sent"] == 0

        report = reconcile(app)
        drain(app)

    # 330 executions, 100 a page: 0 (oldest, all before the window), then 3, then 2, which
    # reaches past the window's start; page 1 lies wholly before it.
    assert requests_to(control, "list_account_executions") == 3
    assert (report.documents, report.restarts_queued, report.capped) == (120, 40, [])
    assert "reconciler" not in get_runtime(app).notes
    calls = control.calls()["restart"]
    assert calls["by_execution"] == {eid: {"received": 1, "applied": 1} for eid in new["new-a"]}
    assert count(app, Decision) == 40
    for execution_id in new["new-a"]:
        assert [d["action"] for d in detail(app, execution_id)["decisions"]] == ["restart"]
    for execution_id in old["old-a"] + old["old-c"]:
        assert sim.simulator.execution(execution_id)["status"] == "FAILURE"
        assert detail_if_known(app, execution_id) is None  # outside the window: not stored


# -- expire_runs ----------------------------------------------------------------------------


@pytest.mark.parametrize("feed", ["callbacks", "reconciler"])
def test_an_expired_run_is_stored_expired_and_never_restarted(
    make_sim: Callable[..., SimulatorServer],
    make_app: Callable[..., Flask],
    policy_file: Path,
    http: requests.Session,
    feed: str,
) -> None:
    """A run cut short by its executionTtl ends EXPIRED in respawn, whether the callbacks or
    the reconciler told it: no failure, no decision, no restart call."""
    clock = Clock(time.time() - 600)
    sim = make_sim(clock=clock, expire_runs=True)
    control = SimulatorControl(http, sim.url)
    policy_file.write_text(POLICY)  # restarts every failure
    app = make_app(**runner_settings(sim))
    with serve(app) as callback_url:
        if feed == "reconciler":
            control.faults(drop_callbacks=1.0)
        definition = fleet_job(
            "slow deploy", {"web1": "fail"}, [{"url": callback_url, "level": "DEBUG"}]
        )
        job = sim.simulator.create_job(ACCOUNT, {**definition, "executionTtl": 1})
        execution_id = sim.simulator.start_job(ACCOUNT, job["id"], {})["execution_id"]
        sim.simulator.advance(3)
        assert sim.simulator.execution(execution_id)["status"] == "RUNNING"
        clock.now += 120  # past the 1-minute TTL; the "fail" host never gets to fail
        run_until_idle(sim, clock)
        assert sim.simulator.execution(execution_id)["status"] == "EXPIRED"
        assert control.wait_deliveries(10)

        if feed == "callbacks":
            decide_from_feed(app)
            assert detail(app, execution_id)["status"] == "EXPIRED"
        report = reconcile(app)
        drain(app)

    assert report.restarts_queued == 0
    body = detail(app, execution_id)
    assert body["status"] == "EXPIRED"
    assert [t["status"] for t in body["timers"]] == ["EXPIRED"]
    assert (body["failed_hosts"], body["host_failures"]) == ([], [])
    assert (body["decisions"], body["restarts"]) == ([], [])
    assert (count(app, Decision), count(app, Restart)) == (0, 0)
    assert control.calls()["restart"]["received"] == 0
    if feed == "callbacks":
        results = [e for e in stored_events(app, execution_id) if e["kind"] != "document"]
        assert results and results[-1]["event_type"] == "playbook_result"
        assert results[-1]["payload"]["message"]["status"] == "EXPIRED"


# -- timestamps_in_seconds ------------------------------------------------------------------


def test_event_timestamps_in_seconds_are_real_dates_and_the_policy_still_decides(
    rapp: Flask, sim: SimulatorServer, control: SimulatorControl, callback_url: str
) -> None:
    """A feed stamped in epoch seconds: every stored event and the run's times are today's
    dates (not 1970), the failure is decided and restarted once, and the next run's events
    land in the next run."""
    control.variants(timestamps_in_seconds=True)
    created = control.fleet(
        {
            "account": ACCOUNT,
            "callbacks": [{"url": callback_url, "level": "DEBUG"}],
            "jobs": [{"description": "web tier", "hosts": {"web1": "fail_first:1", "web2": "ok"}}],
        }
    )
    (execution_id,) = created["jobs"][0]["executions"]
    job_id = created["jobs"][0]["id"]
    control.advance_until_idle()
    assert control.wait_deliveries(10)
    sent = sim.simulator.status_events(ACCOUNT, job_id, execution_id, None, None)
    assert isinstance(sent, list)
    assert all(isinstance(e["timestamp"], float) and e["timestamp"] < 1e11 for e in sent)

    # Decided from the feed alone: no executions listing, no document.
    body = detail(rapp, execution_id)
    assert body["status"] == "FAILURE"
    (run,) = body["timers"]
    assert run["start_derived"] and run["end_derived"]
    started, ended = a_real_date(run["started_at"]), a_real_date(run["ended_at"])
    assert started <= ended
    assert abs(run["start"] - sent[0]["timestamp"] * 1000) < 1000
    for moment in ("first_failure_at", "last_event_at", "first_seen_at"):
        a_real_date(body[moment])
    events = stored_events(rapp, execution_id)
    assert len(events) == len(sent)
    for event in events:
        a_real_date(event["event_at"])
    ((decision),) = body["decisions"]
    assert (decision["action"], decision["rule"], decision["hosts"]) == (
        "restart",
        "defaults",
        ["web1"],
    )

    drain(rapp)
    control.advance_until_idle()  # the restarted run: web1 succeeds this time
    assert control.wait_deliveries(10)

    assert control.calls()["restart"]["by_execution"] == {
        execution_id: {"received": 1, "applied": 1}
    }
    body = detail(rapp, execution_id)
    assert [t["status"] for t in body["timers"]] == ["FAILURE", "SUCCESS"]
    for run in body["timers"]:
        a_real_date(run["started_at"])
        a_real_date(run["ended_at"])
    first_run_ids = {e["id"] for e in sent}
    events = stored_events(rapp, execution_id)
    assert {e["event_id"]: e["run"] for e in events if e["event_id"] in first_run_ids} == {
        e["id"]: 0 for e in sent
    }
    later = [e for e in events if e["event_id"] and e["event_id"] not in first_run_ids]
    assert later and {e["run"] for e in later} == {1}
    for event in later:
        a_real_date(event["event_at"])


# -- the status API recovers a lost feed ----------------------------------------------------


@pytest.mark.parametrize("status_page", [True, False], ids=["page", "array"])
def test_a_lost_feed_is_read_from_the_status_api_and_a_message_rule_decides(
    make_app: Callable[..., Flask],
    policy_file: Path,
    sim: SimulatorServer,
    control: SimulatorControl,
    status_page: bool,
) -> None:
    """Every callback dropped: the reconciler reads the failure's events from the status API
    (two pages, as pages or bare arrays), so the rule matching one host's error text decides,
    not the defaults (skip), and the restart names that host only."""
    policy_file.write_text(MESSAGE_POLICY.replace("{extra}", ""))
    app = make_app(**runner_settings(sim))
    control.faults(drop_callbacks=1.0)
    hosts: dict[str, Any] = {f"app{n:02}": "ok" for n in range(30)}
    hosts["db1"] = {"fail_message": BAD_PASSWORD, "rc": 2}
    hosts["db2"] = {"fail_message": DISK_FULL}
    with serve(app) as callback_url:
        created = control.fleet(
            {
                "account": ACCOUNT,
                "callbacks": [{"url": callback_url, "level": "DEBUG"}],
                "jobs": [{"description": "orders db", "hosts": hosts}],
            }
        )
        (execution_id,) = created["jobs"][0]["executions"]
        job_id = created["jobs"][0]["id"]
        control.advance_until_idle()
        assert control.wait_deliveries(10)
        sent = sim.simulator.status_events(ACCOUNT, job_id, execution_id, None, None)
        assert isinstance(sent, list) and len(sent) > 100  # more than one page of events
        deliveries = control.deliveries()["counts"]
        assert (deliveries["sent"], deliveries["dropped"]) == (0, len(sent))
        control.variants(status_page=status_page)

        report = reconcile(app)
        drain(app)

    assert (report.feeds_recovered, report.restarts_queued) == (1, 1)
    assert requests_to(control, "status_events") == 2
    recovered = [e["event_id"] for e in stored_events(app, execution_id) if e["kind"] == "event"]
    assert sorted(recovered) == sorted(e["id"] for e in sent)
    body = detail(app, execution_id)
    failures = {f["host"]: f for f in body["host_failures"]}
    assert set(failures) == {"db1", "db2"}
    assert failures["db1"]["failure_class"] == "task_failed"
    assert (failures["db1"]["stderr_tail"], failures["db1"]["rc"]) == (BAD_PASSWORD, 2)
    assert failures["db2"]["stderr_tail"] == DISK_FULL
    ((decision),) = body["decisions"]
    assert (decision["rule"], decision["action"], decision["hosts"]) == (
        "db-password-rejected",
        "restart",
        ["db1"],
    )
    assert [h["host"] for h in decision["excluded_hosts"]] == ["db2"]
    calls = control.calls()["restart"]
    assert calls["by_execution"] == {execution_id: {"received": 1, "applied": 1}}
    assert [entry["hosts"] for entry in calls["log"]] == [["db1"]]


def test_the_lost_feed_of_a_restarted_run_is_recovered_for_that_run(
    make_app: Callable[..., Flask],
    policy_file: Path,
    sim: SimulatorServer,
    control: SimulatorControl,
) -> None:
    """The first run's feed arrives, the restarted run's is lost: the reconciler still reads
    the status API (events heard before that run do not count), files the new events under
    the second run, and the message rule decides that run too."""
    policy_file.write_text(MESSAGE_POLICY.replace("{extra}", ""))
    app = make_app(**runner_settings(sim))
    with serve(app) as callback_url:
        created = control.fleet(
            {
                "account": ACCOUNT,
                "callbacks": [{"url": callback_url, "level": "DEBUG"}],
                "jobs": [
                    {
                        "description": "orders db",
                        "hosts": {"db1": {"fail_message": BAD_PASSWORD}, "db2": "ok"},
                    }
                ],
            }
        )
        (execution_id,) = created["jobs"][0]["executions"]
        control.advance_until_idle()
        assert control.wait_deliveries(10)
        drain(app)
        control.faults(drop_callbacks=1.0)
        control.advance_until_idle()  # the restarted run fails again, unheard
        assert control.wait_deliveries(10)
        assert [d["run"] for d in detail(app, execution_id)["decisions"]] == [0]

        report = reconcile(app)
        drain(app)

    assert (report.feeds_recovered, report.restarts_queued) == (1, 1)
    body = detail(app, execution_id)
    # (the third run is the one the second restart queued)
    assert [t["status"] for t in body["timers"]] == ["FAILURE", "FAILURE", "PENDING"]
    assert [(f["run"], f["host"], f["stderr_tail"]) for f in body["host_failures"]] == [
        (0, "db1", BAD_PASSWORD),
        (1, "db1", BAD_PASSWORD),
    ]
    assert [(d["run"], d["rule"], d["hosts"]) for d in body["decisions"]] == [
        (0, "db-password-rejected", ["db1"]),
        (1, "db-password-rejected", ["db1"]),
    ]
    calls = control.calls()["restart"]
    assert calls["by_execution"] == {execution_id: {"received": 2, "applied": 2}}
    assert [entry["hosts"] for entry in calls["log"]] == [["db1"], ["db1"]]


# -- the real Ansible engine ----------------------------------------------------------------


def test_real_ansible_failure_is_restarted_on_its_failed_hosts_by_a_message_rule(
    make_sim: Callable[..., SimulatorServer],
    make_app: Callable[..., Flask],
    policy_file: Path,
) -> None:
    """ansible-playbook runs the job: one host fails with a database error, one is
    unreachable, one succeeds. The feed reaches the receiver, the rule matching the error
    text restarts exactly the failed hosts once, and the next run (only they run) is
    recorded and decided by the same rule's budget."""
    pytest.importorskip("ansible", reason="ansible-core is not installed")
    sim = make_sim(engine="ansible", speed=20)
    policy_file.write_text(
        MESSAGE_POLICY.replace("{extra}", "    hosts: all_failed\n    max_restarts: 1\n")
    )
    app = make_app(**runner_settings(sim, reconcile_interval=3600.0))
    with serve(app) as callback_url:
        background = start_background(get_runtime(app))
        assert background is not None
        try:
            definition = fleet_job(
                "orders db deploy", ["web1"], [{"url": callback_url, "level": "DEBUG"}]
            )
            definition["hosts"] += [
                {"id": "db1", "hostVars": {"sim_fail": True, "sim_fail_message": BAD_PASSWORD}},
                {"id": "web3", "hostVars": {"sim_unreachable": True}},
            ]
            job = sim.simulator.create_job(ACCOUNT, definition)
            execution_id = sim.simulator.start_job(ACCOUNT, job["id"], {})["execution_id"]

            def second_run_decided() -> bool:
                body = detail_if_known(app, execution_id) or {"run_count": 0}
                return body["run_count"] == 2 and len(body["decisions"]) == 2

            wait_until(second_run_decided, timeout=60)
            assert sim.simulator.callbacks.wait_idle(10)
        finally:
            background.stop()

    emitted = sim.simulator.status_events(ACCOUNT, job["id"], execution_id, None, None)
    assert isinstance(emitted, list)
    assert sim.simulator.callbacks.deliveries()["counts"]["sent"] == len(emitted)
    body = detail(app, execution_id)
    assert [t["status"] for t in body["timers"]] == ["FAILURE", "FAILURE"]
    first = {f["host"]: f for f in body["host_failures"] if f["run"] == 0}
    assert set(first) == {"db1", "web3"}
    assert first["db1"]["failure_class"] == "task_failed"
    assert first["db1"]["message"] == "non-zero return code"  # Ansible's msg; the text:
    assert first["db1"]["stderr_tail"] == BAD_PASSWORD
    assert first["web3"]["failure_class"] == "unreachable"
    restart_decision, after = body["decisions"]
    assert (restart_decision["rule"], restart_decision["action"]) == (
        "db-password-rejected",
        "restart",
    )
    assert sorted(restart_decision["hosts"]) == ["db1", "web3"]
    # The second run matches the same rule, whose one restart is used up.
    assert (after["run"], after["rule"], after["action"], after["reason_code"]) == (
        1,
        "db-password-rejected",
        "skip",
        "max_restarts",
    )
    (restart,) = body["restarts"]
    assert (restart["state"], restart["outcome"], restart["result"]) == (
        "done",
        "restarted",
        "failed_again",
    )
    calls = sim.simulator.calls.snapshot()["restart"]
    assert calls["by_execution"] == {execution_id: {"received": 1, "applied": 1}}
    ((logged),) = calls["log"]
    assert sorted(logged["hosts"]) == ["db1", "web3"]
    (ran,) = [e for e in sim.simulator.executions() if e["execution_id"] == execution_id]
    assert sorted(ran["hosts"]) == ["db1", "web3"] and ran["runs"] == 2
    # Only the restarted hosts ran again, as respawn recorded.
    second = {f["host"] for f in body["host_failures"] if f["run"] == 1}
    assert second == {"db1", "web3"}
    ran_again = {e["host"] for e in stored_events(app, execution_id) if e["run"] == 1 and e["host"]}
    assert ran_again == {"db1", "web3"}
