"""Published Runner shapes (docs/runner.md): job links, executionTtl, the start call and its
answer, and the status API for one execution and for a whole job."""

from __future__ import annotations

from typing import Any

import pytest
import requests

from app.runner import RestartHost, RunnerClient, RunnerRejected
from app.runner.documents import parse_execution_document, parse_status_event
from app.simulator import SimulatorServer
from tests.simulator.conftest import (
    ACCOUNT,
    OTHER_ACCOUNT,
    OTHER_PASSWORD,
    OTHER_USER,
    bearer,
    create_job,
    make_client,
)


def post(http: requests.Session, url: str, client: RunnerClient, body: Any) -> requests.Response:
    return http.post(url, json=body, headers=bearer(client), timeout=5)


def get(http: requests.Session, url: str, client: RunnerClient) -> requests.Response:
    return http.get(url, headers=bearer(client), timeout=5)


# -- jobs -----------------------------------------------------------------------------------


def test_job_links_are_ref_id_href_verbs(
    sim: SimulatorServer, http: requests.Session, client: RunnerClient
) -> None:
    (job,) = post(http, f"{sim.url}/jobs/{ACCOUNT}", client, {"description": "linked"}).json()
    base = f"/jobs/{ACCOUNT}/{job['id']}"
    assert job["links"] == [
        {"ref": "self", "id": job["id"], "href": base, "verbs": ["GET", "PUT", "DELETE"]},
        {"ref": "executions", "id": job["id"], "href": f"{base}/executions", "verbs": ["GET"]},
        {"ref": "start", "id": job["id"], "href": f"{base}/start", "verbs": ["POST"]},
    ]
    (fetched,) = get(http, f"{sim.url}{base}", client).json()
    assert fetched["links"] == job["links"]


@pytest.mark.parametrize("ttl", [None, 30])
def test_execution_ttl_may_be_null_or_minutes(
    sim: SimulatorServer, http: requests.Session, client: RunnerClient, ttl: int | None
) -> None:
    body = {"description": "ttl", "executionTtl": ttl, "hosts": [{"id": "web1"}]}
    created = post(http, f"{sim.url}/jobs/{ACCOUNT}", client, body)
    assert created.status_code == 200
    assert created.json()[0]["executionTtl"] == ttl  # kept as sent; null means 180 minutes


@pytest.mark.parametrize("ttl", [0, -5, "180", True, 1.5])
def test_a_bad_execution_ttl_is_refused(
    sim: SimulatorServer, http: requests.Session, client: RunnerClient, ttl: Any
) -> None:
    answer = post(http, f"{sim.url}/jobs/{ACCOUNT}", client, {"executionTtl": ttl})
    assert answer.status_code == 400
    assert set(answer.json()["modelState"]) == {"executionTtl"}


# -- the start call -------------------------------------------------------------------------


def test_start_answer_has_top_level_start_and_end(
    sim: SimulatorServer, http: requests.Session, client: RunnerClient
) -> None:
    job = create_job(client, ["web1"])
    answer = post(http, f"{sim.url}/jobs/{ACCOUNT}/{job.id}/start", client, {})
    document = answer.json()
    assert answer.status_code == 200 and document["status"] == "PENDING"
    assert document["start"] is None and document["end"] is None  # the published example
    assert document["timers"] == []  # kept for clients that read timers
    assert parse_execution_document(document).timers == ()
    # only the start answer has them: the execution itself is the usual document
    fetched = get(
        http, f"{sim.url}/jobs/{ACCOUNT}/{job.id}/executions/{document['execution_id']}", client
    ).json()
    assert "start" not in fetched and fetched["timers"] == []


def test_start_may_name_hosts_the_job_does_not_define(
    sim: SimulatorServer, http: requests.Session, client: RunnerClient
) -> None:
    job = create_job(client, {"web1": "ok", "web2": "ok"})
    sim.simulator.set_scripts({"extra*": "fail"})
    body = {"hosts": [{"id": "web2"}, {"id": "extra1", "sshPrivateKey": "a2V5"}]}
    started = post(http, f"{sim.url}/jobs/{ACCOUNT}/{job.id}/start", client, body).json()
    execution = started["execution_id"]
    assert sim.simulator.execution(execution)["restarts"] == 0
    sim.simulator.advance_until_idle()
    doc = client.get_execution(ACCOUNT, job.id, execution)
    assert doc.status == "FAILURE" and doc.failed_hosts == ("extra1",)
    events = sim.simulator.status_events(ACCOUNT, job.id, execution, None, None)
    assert isinstance(events, list)
    assert {e["message"].get("host") for e in events} - {None} == {"web2", "extra1"}

    # a restart may name them again (they are the execution's hosts), but no others
    client.restart(ACCOUNT, job.id, execution, [RestartHost("extra1")])
    sim.simulator.advance_until_idle()
    assert sim.simulator.execution(execution)["runs"] == 2
    with pytest.raises(RunnerRejected, match="not defined in the job: extra2"):
        client.restart(ACCOUNT, job.id, execution, [RestartHost("extra2")])


# -- the status API -------------------------------------------------------------------------


def finished_job(
    sim: SimulatorServer, client: RunnerClient, runs: int = 1
) -> tuple[str, list[str]]:
    job = create_job(client, {"web1": "ok", "db1": "fail"})
    executions = []
    for _ in range(runs):
        executions.append(client.start_job(ACCOUNT, job.id).execution_id)
        sim.simulator.advance_until_idle()
    return job.id, executions


def test_execution_status_is_a_bare_array_of_the_fed_events(
    sim: SimulatorServer, http: requests.Session, client: RunnerClient
) -> None:
    job_id, (execution,) = finished_job(sim, client)
    events = get(http, f"{sim.url}/status/{ACCOUNT}/job/{job_id}/execution/{execution}", client)
    assert events.status_code == 200
    body = events.json()
    assert isinstance(body, list)
    assert body == sim.simulator.status_events(ACCOUNT, job_id, execution, None, None)
    assert body[0]["event_type"] == "playbook_on_start"
    assert body[-1]["event_type"] == "playbook_result"
    assert body[-1]["message"]["status"] == "FAILURE"
    for event in body:
        assert set(event) == {
            "id",
            "timestamp",
            "account_alias",
            "job_id",
            "execution_id",
            "event_type",
            "message",
            "notifications",
        }
        assert isinstance(event["timestamp"], int)  # epoch milliseconds
        parse_status_event(event)


def test_job_status_holds_every_execution_in_order(
    sim: SimulatorServer, http: requests.Session, client: RunnerClient
) -> None:
    job_id, (first, second) = finished_job(sim, client, runs=2)
    body = get(http, f"{sim.url}/status/{ACCOUNT}/job/{job_id}", client).json()
    assert isinstance(body, list)
    joined: list[Any] = []
    for execution in (first, second):
        events = sim.simulator.status_events(ACCOUNT, job_id, execution, None, None)
        assert isinstance(events, list)
        joined += events
    assert body == joined

    page = get(http, f"{sim.url}/status/{ACCOUNT}/job/{job_id}?page=1&size=5", client).json()
    assert page == {"totalSize": len(body), "page": 1, "size": 5, "results": body[5:10]}


def test_job_status_of_a_job_never_run_is_empty(
    sim: SimulatorServer, http: requests.Session, client: RunnerClient
) -> None:
    job = create_job(client, ["web1"])
    assert get(http, f"{sim.url}/status/{ACCOUNT}/job/{job.id}", client).json() == []


def test_status_api_refuses_strangers(
    sim: SimulatorServer, http: requests.Session, client: RunnerClient
) -> None:
    job_id, (execution,) = finished_job(sim, client)
    urls = [
        f"{sim.url}/status/{ACCOUNT}/job/{job_id}",
        f"{sim.url}/status/{ACCOUNT}/job/{job_id}/execution/{execution}",
    ]
    other = make_client(sim, http, username=OTHER_USER, password=OTHER_PASSWORD)
    for url in urls:
        assert http.get(url, timeout=5).status_code == 401  # no token
        assert get(http, url, other).status_code == 403  # another account's path
    unknown = "00000000-0000-4000-8000-000000000000"
    assert get(http, f"{sim.url}/status/{ACCOUNT}/job/{unknown}", client).status_code == 404
    mine = create_job(other, ["x1"], account=OTHER_ACCOUNT)
    assert get(http, f"{sim.url}/status/{ACCOUNT}/job/{mine.id}", client).status_code == 404
    assert (
        get(
            http, f"{sim.url}/status/{ACCOUNT}/job/{job_id}/execution/{unknown}", client
        ).status_code
        == 404
    )


def test_status_paging_is_checked(
    sim: SimulatorServer, http: requests.Session, client: RunnerClient
) -> None:
    job_id, _ = finished_job(sim, client)
    for query in ("page=-1", "size=0", "size=101", "page=x"):
        answer = get(http, f"{sim.url}/status/{ACCOUNT}/job/{job_id}?{query}", client)
        assert answer.status_code == 400, query
