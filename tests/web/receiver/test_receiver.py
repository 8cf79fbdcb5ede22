"""The callback receiver through HTTP, on SQLite and PostgreSQL: store, dedupe, order, reject."""

from __future__ import annotations

import json
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from app.models import Event, Execution
from tests.conftest import CALLBACK_TOKEN, fixture_path
from tests.feed import EXECUTION_ID, JOB_ID, event, failing_run_events
from tests.helpers import transaction

URL = f"/callbacks/{CALLBACK_TOKEN}"


def post(client: FlaskClient, body: Any, **headers: str) -> Any:
    return client.post(URL, data=json.dumps(body), content_type="application/json", headers=headers)


def stored_counts(app: Flask) -> tuple[int, int]:
    with transaction(app) as session:
        events = session.scalar(select(func.count()).select_from(Event)) or 0
        executions = session.scalar(select(func.count()).select_from(Execution)) or 0
    return events, executions


def detail(client: FlaskClient, headers: dict[str, str], execution_id: str = EXECUTION_ID) -> Any:
    response = client.get(f"/api/v1/executions/{execution_id}", headers=headers)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def test_seed_restart_response_is_stored_and_read_back(
    client: FlaskClient, api_headers: dict[str, str]
) -> None:
    document = json.loads(fixture_path("restart-response.json").read_text())

    response = post(client, document)

    assert response.status_code == 202
    assert response.get_json() == {"accepted": 1, "duplicates": 0}
    body = detail(client, api_headers, document["execution_id"])
    assert body["execution_id"] == "44fdcfa2-6a7f-46d3-9f71-22e629e2358a"
    assert body["job_id"] == "1111505e-6773-494a-b2bf-d2cc2684710d"
    assert body["account_alias"] == "XXXX"
    assert body["status"] == "PENDING"
    assert body["is_vpn_established"] is False
    assert body["repository_log"] is None
    # The restart answer keeps the earlier timer; the PENDING run is the next one.
    assert [(t["run"], t["start"], t["end"]) for t in body["timers"]] == [
        (0, 1445359386400, 1445359388219),
        (1, None, None),
    ]
    assert body["timers"][0]["started_at"] == "2015-10-20T16:43:06.400000+00:00"
    assert body["timers"][0]["start_derived"] is False
    assert body["run_count"] == 2
    assert body["failed_hosts"] == []
    # The example's `failed_hosts: [0]` is a placeholder: no host "0" failed (docs/runner.md).
    assert body["host_failures"] == []


def test_stream_of_status_events_is_read_back_exactly(
    client: FlaskClient, api_headers: dict[str, str]
) -> None:
    events = failing_run_events(start_ms=1_700_000_000_000)

    for item in events:
        assert post(client, item).status_code == 202

    body = detail(client, api_headers)
    assert body["status"] == "FAILURE"
    assert body["account_alias"] == "XXXX"
    assert body["job_id"] == JOB_ID
    assert sorted(body["failed_hosts"]) == ["web2", "web3"]
    (timer,) = body["timers"]
    assert (timer["start"], timer["end"]) == (events[0]["timestamp"], events[-1]["timestamp"])
    assert timer["start_derived"] is True and timer["end_derived"] is True
    failures = {f["host"]: f for f in body["host_failures"]}
    assert failures["web2"]["failure_class"] == "task_failed"
    assert failures["web2"]["message"] == "non-zero return code"
    assert "Connection timed out" in failures["web2"]["stderr_tail"]
    assert failures["web2"]["rc"] == 2
    assert failures["web3"]["failure_class"] == "unreachable"

    listed = client.get(
        f"/api/v1/executions/{EXECUTION_ID}/events?limit=3", headers=api_headers
    ).get_json()
    seen = listed["items"]
    while listed["next_cursor"]:
        listed = client.get(
            f"/api/v1/executions/{EXECUTION_ID}/events?limit=3&cursor={listed['next_cursor']}",
            headers=api_headers,
        ).get_json()
        seen += listed["items"]
    assert [e["payload"] for e in seen] == events
    assert [e["event_type"] for e in seen] == [e["event_type"] for e in events]


def test_document_confirms_derived_timer(client: FlaskClient, api_headers: dict[str, str]) -> None:
    events = failing_run_events(start_ms=1_700_000_000_000)
    for item in events:
        post(client, item)
    document = {
        "execution_id": EXECUTION_ID,
        "job_id": JOB_ID,
        "account_alias": "XXXX",
        "status": "FAILURE",
        "timers": [{"start": 1_699_999_999_000, "end": 1_700_000_009_999}],
        "failed_hosts": ["web2", "web3"],
    }
    post(client, document)

    (timer,) = detail(client, api_headers)["timers"]
    assert (timer["start"], timer["end"]) == (1_699_999_999_000, 1_700_000_009_999)
    assert timer["start_derived"] is False and timer["end_derived"] is False


def test_same_event_twice_is_stored_once(client: FlaskClient, app: Flask) -> None:
    item = event("runner_on_failed", 1, host="web1")

    first = post(client, item)
    second = post(client, item)

    assert first.get_json() == {"accepted": 1, "duplicates": 0}
    assert second.status_code == 202
    assert second.get_json() == {"accepted": 0, "duplicates": 1}
    assert stored_counts(app) == (1, 1)


def test_duplicates_inside_one_array_are_counted(client: FlaskClient, app: Flask) -> None:
    a, b = event("playbook_on_start", 1), event("runner_on_ok", 2, host="web1")

    response = post(client, [a, b, a])

    assert response.get_json() == {"accepted": 2, "duplicates": 1}
    assert stored_counts(app) == (2, 1)


def test_documents_dedupe_by_content_not_record_id(client: FlaskClient, app: Flask) -> None:
    document = {
        "execution_id": EXECUTION_ID,
        "status": "RUNNING",
        "timers": [{"start": 1, "end": None}],
        "failed_hosts": [],
    }

    post(client, {**document, "id": "record-1"})
    again = post(client, {**document, "id": "record-2"})
    changed = post(client, {**document, "status": "FAILURE", "id": "record-1"})

    assert again.get_json() == {"accepted": 0, "duplicates": 1}
    assert changed.get_json() == {"accepted": 1, "duplicates": 0}


def test_webhook_id_names_the_delivery(client: FlaskClient, app: Flask) -> None:
    post(client, event("runner_on_ok", 1, host="web1"), **{"webhook-id": "msg_1"})
    retried = post(client, event("runner_on_ok", 2, host="web1"), **{"webhook-id": "msg_1"})

    assert retried.get_json() == {"accepted": 0, "duplicates": 1}
    assert stored_counts(app) == (1, 1)


def test_late_running_event_does_not_undo_failure(
    client: FlaskClient, api_headers: dict[str, str]
) -> None:
    events = failing_run_events(start_ms=1_700_000_000_000)
    result, rest = events[-1], events[:-1]

    post(client, result)
    for item in reversed(rest):
        post(client, item)

    body = detail(client, api_headers)
    assert body["status"] == "FAILURE"
    assert body["run_count"] == 1
    assert sorted(body["failed_hosts"]) == ["web2", "web3"]
    assert {f["host"]: f["failure_class"] for f in body["host_failures"]}["web2"] == "task_failed"


def test_restart_moves_forward_and_old_documents_do_not_move_back(
    client: FlaskClient, api_headers: dict[str, str]
) -> None:
    base = {"execution_id": EXECUTION_ID, "job_id": JOB_ID, "account_alias": "XXXX"}
    failed = {
        **base,
        "status": "FAILURE",
        "timers": [{"start": 1000, "end": 2000}],
        "failed_hosts": ["web1"],
    }
    pending = {
        **base,
        "status": "PENDING",
        "timers": [{"start": 1000, "end": 2000}],
        "failed_hosts": ["web1"],
    }
    running = {
        **base,
        "status": "RUNNING",
        "timers": [{"start": 1000, "end": 2000}, {"start": 3000, "end": None}],
        "failed_hosts": [],
    }

    for document in (failed, pending, running, failed, pending):
        post(client, document)

    body = detail(client, api_headers)
    assert body["status"] == "RUNNING"
    assert body["current_run"] == 1
    assert body["failed_hosts"] == []
    assert [(t["run"], t["status"]) for t in body["timers"]] == [(0, "FAILURE"), (1, "RUNNING")]


def test_events_after_a_finished_run_start_the_next_run(
    client: FlaskClient, api_headers: dict[str, str]
) -> None:
    first = failing_run_events(start_ms=1_700_000_000_000)
    second = failing_run_events(start_ms=1_700_000_100_000, failing=("web2",), prefix="b")
    late = event("runner_on_failed", 1_700_000_000_500, host="web9", event_id="late-1")

    for item in [*first, *second[:2], late, *second[2:]]:
        post(client, item)

    body = detail(client, api_headers)
    assert body["status"] == "FAILURE"
    assert body["current_run"] == 1
    assert body["failed_hosts"] == ["web2"]
    by_run = {(f["run"], f["host"]) for f in body["host_failures"]}
    assert (0, "web9") in by_run and (1, "web2") in by_run and (1, "web3") not in by_run
    assert [t["run"] for t in body["timers"]] == [0, 1]


def test_published_quirks_are_accepted(client: FlaskClient, api_headers: dict[str, str]) -> None:
    page = json.loads(fixture_path("executions-page.json").read_text())
    lowercase = {
        "execution_id": "exec-lower",
        "job_id": "job-x",
        "account_alias": "xxxx",
        "status": "failure",
        "start": 5,
        "end": 9,
        "failed_hosts": [0, "db1", 2.5],
        "repository_log": "commit abc123",
        "custom_field": {"kept": True},
    }

    response = post(client, [*page["results"], lowercase])

    assert response.get_json() == {"accepted": 3, "duplicates": 0}
    body = detail(client, api_headers, "exec-lower")
    assert body["status"] == "FAILURE"
    # 0 is the published examples' placeholder, not a host (docs/runner.md).
    assert body["failed_hosts"] == ["db1", "2.5"]
    assert body["repository_log"] == "commit abc123"
    # Epoch values this small can only be seconds: 5 s and 9 s after 1970, in milliseconds.
    assert [(t["start"], t["end"]) for t in body["timers"]] == [(5000, 9000)]
    events = client.get("/api/v1/executions/exec-lower/events", headers=api_headers).get_json()
    assert events["items"][0]["payload"]["custom_field"] == {"kept": True}
    running = detail(client, api_headers, "44fdcfa2-6a7f-46d3-9f71-22e629e2358a")
    assert running["repository_log"] == {"recent_commit": [], "tags": []}


def test_secrets_are_redacted_before_storage(
    client: FlaskClient, app: Flask, api_headers: dict[str, str]
) -> None:
    secret = (
        "-----BEGIN OPENSSH PRIVATE KEY-----\n"
        "b3BlbnNzaC1rZXktdjEAAAA\n"
        "-----END OPENSSH PRIVATE KEY-----"
    )
    item = event("runner_on_failed", 1, host="web1")
    item["message"]["msg"] = f"failed with key {secret}"
    item["sshPrivateKey"] = "c2VjcmV0LWtleS1ib2R5"
    item["repository"] = {"credentials": {"username": "u", "password": "hunter2-password"}}

    post(client, item)

    with transaction(app) as session:
        stored = json.dumps([e.payload for e in session.scalars(select(Event))])
    answer = client.get(f"/api/v1/executions/{EXECUTION_ID}/events", headers=api_headers)
    shown = answer.get_data(as_text=True) + json.dumps(detail(client, api_headers))
    for text in (stored, shown):
        assert "c2VjcmV0LWtleS1ib2R5" not in text
        assert "hunter2-password" not in text
        assert "b3BlbnNzaC1rZXktdjEAAAA" not in text
    assert "[redacted]" in stored


@pytest.mark.parametrize(
    ("content_type", "data", "status", "code"),
    [
        ("text/plain", b'{"execution_id": "x"}', 415, "unsupported_media_type"),
        ("application/x-www-form-urlencoded", b"execution_id=x", 415, "unsupported_media_type"),
        ("application/json", b"{not json", 400, "malformed"),
        ("application/json", b"", 400, "malformed"),
        ("application/json", b'{"execution_id": NaN}', 400, "malformed"),
        ("application/json", b"[" * 100_000, 400, "malformed"),
        ("application/json", b"\xff\xfe", 400, "malformed"),
        ("application/json", b'"a string"', 422, "invalid"),
        ("application/json", b"42", 422, "invalid"),
        ("application/json", b"[]", 422, "invalid"),
        ("application/json", b'{"status": "FAILURE"}', 422, "invalid"),
        ("application/json", b'{"execution_id": ""}', 422, "invalid"),
        ("application/json", b'{"execution_id": {"a": 1}}', 422, "invalid"),
        ("application/json", b'{"execution_id": "e", "status": {"a": 1}}', 422, "invalid"),
        ("application/json", b'{"execution_id": "e", "timers": "soon"}', 422, "invalid"),
        ("application/json", b'{"execution_id": "e", "timers": [{"start": "x"}]}', 422, "invalid"),
        ("application/json", b'{"execution_id": "e", "timers": [{"start": -5}]}', 422, "invalid"),
        ("application/json", b'{"execution_id": "e", "failed_hosts": "web1"}', 422, "invalid"),
        ("application/json", b'{"execution_id": "e", "failed_hosts": [[1]]}', 422, "invalid"),
        ("application/json", b'{"execution_id": "e", "event_type": 5}', 422, "invalid"),
        (
            "application/json",
            b'{"execution_id": "e", "event_type": "x", "timestamp": true}',
            422,
            "invalid",
        ),
    ],
)
def test_bad_input_is_refused_and_nothing_stored(
    client: FlaskClient, app: Flask, content_type: str, data: bytes, status: int, code: str
) -> None:
    response = client.post(URL, data=data, content_type=content_type)

    assert response.status_code == status
    body = response.get_json()
    assert body["error"] == code
    assert isinstance(body["message"], str) and body["message"]
    assert isinstance(body["fields"], dict)
    assert "Traceback" not in response.get_data(as_text=True)
    assert stored_counts(app) == (0, 0)


def test_422_names_the_fields(client: FlaskClient) -> None:
    body = post(client, {"execution_id": "e", "status": ["x"], "timers": "x"}).get_json()

    assert set(body["fields"]) == {"status", "timers"}


def test_rejected_array_stores_none_of_its_items(client: FlaskClient, app: Flask) -> None:
    good = event("runner_on_ok", 1, host="web1")

    response = post(client, [good, {"event_type": "runner_on_ok"}, good | {"id": "other"}])

    assert response.status_code == 422
    assert set(response.get_json()["fields"]) == {"1"}
    assert stored_counts(app) == (0, 0)


def test_unknown_token_is_404_and_stores_nothing(client: FlaskClient, app: Flask) -> None:
    response = client.post("/callbacks/not-the-token", json=event("runner_on_ok", 1))

    assert response.status_code == 404
    assert response.get_json()["error"] == "not_found"
    assert stored_counts(app) == (0, 0)


def test_body_over_the_limit_is_413(make_app: Any) -> None:
    app = make_app(max_body_bytes=2048)
    client = app.test_client()
    item = event("runner_on_ok", 1, host="web1")
    item["message"]["stdout"] = "x" * 4096

    response = post(client, item)

    assert response.status_code == 413
    assert response.get_json()["error"] == "too_large"
    assert stored_counts(app) == (0, 0)


def test_too_many_items_is_422(make_app: Any) -> None:
    app = make_app(max_batch_items=3)
    client = app.test_client()

    response = post(client, [event("runner_on_ok", i, host="w") for i in range(4)])

    assert response.status_code == 422
    assert stored_counts(app) == (0, 0)


def test_get_on_callback_is_405_json(client: FlaskClient) -> None:
    response = client.get(URL)

    assert response.status_code == 405
    assert response.get_json()["error"] == "method_not_allowed"


def test_closing_event_just_after_a_documents_end_stays_in_its_run(
    client: FlaskClient, api_headers: dict[str, str]
) -> None:
    document = {
        "execution_id": EXECUTION_ID,
        "job_id": JOB_ID,
        "account_alias": "XXXX",
        "status": "FAILURE",
        "timers": [{"start": 1000, "end": 5000}],
        "failed_hosts": ["web2"],
    }

    post(client, document)
    post(client, event("playbook_on_stats", 5001))
    post(client, event("playbook_result", 5002, status="FAILURE"))

    body = detail(client, api_headers)
    assert (body["run_count"], body["current_run"], body["status"]) == (1, 0, "FAILURE")
    assert len(body["decisions"]) == 1


def test_late_result_after_a_restart_was_accepted_stays_in_the_old_run(
    client: FlaskClient, api_headers: dict[str, str]
) -> None:
    base = {"execution_id": EXECUTION_ID, "job_id": JOB_ID, "account_alias": "XXXX"}
    post(
        client,
        {
            **base,
            "status": "FAILURE",
            "timers": [{"start": 1000, "end": 5000}],
            "failed_hosts": ["web2"],
        },
    )
    # The restart's answer: PENDING with the earlier timer only.
    post(
        client,
        {
            **base,
            "status": "PENDING",
            "timers": [{"start": 1000, "end": 5000}],
            "failed_hosts": ["web2"],
        },
    )

    post(client, event("playbook_result", 5003, status="FAILURE"))

    body = detail(client, api_headers)
    assert (body["current_run"], body["status"]) == (1, "PENDING")
    assert len(body["decisions"]) == 1
    events = client.get(
        f"/api/v1/executions/{EXECUTION_ID}/events", headers=api_headers
    ).get_json()["items"]
    assert events[-1]["run"] == 0


def test_a_second_result_after_the_end_belongs_to_the_next_run(
    client: FlaskClient, api_headers: dict[str, str]
) -> None:
    post(client, event("playbook_on_start", 1000))
    post(client, event("playbook_result", 5000, status="FAILURE"))
    # The next run's start was lost; only its result arrives, shortly after.
    post(client, event("playbook_result", 6000, status="SUCCESS"))

    body = detail(client, api_headers)
    assert (body["run_count"], body["status"]) == (2, "SUCCESS")


@pytest.mark.parametrize(
    "data",
    [
        b'{"execution_id": "e1", "event_type": "\\ud800"}',
        b'{"execution_id": "e1", "status": "FAILURE", "x": ["\\udfff"]}',
        b'{"execution_id": "e\\u0000", "status": "FAILURE"}',
        b'[{"execution_id": "e1", "event_type": "runner_on_ok", "message": {"msg": "a\\u0000b"}}]',
        # A surrogate as raw bytes (the parser lets them through), and the same text in
        # UTF-16, which the parser reads too: the escape is then not the bytes `\\u`.
        b'{"execution_id": "e1", "status": "FAILURE", "x": "\xed\xa0\x80"}',
        '{"execution_id": "e\\u0000", "status": "FAILURE"}'.encode("utf-16"),
        '{"execution_id": "e\ud800", "status": "FAILURE"}'.encode("utf-16", "surrogatepass"),
    ],
)
def test_text_no_database_can_store_is_400(client: FlaskClient, app: Flask, data: bytes) -> None:
    response = client.post(URL, data=data, content_type="application/json")

    assert response.status_code == 400
    assert response.get_json()["error"] == "malformed"
    assert stored_counts(app) == (0, 0)
