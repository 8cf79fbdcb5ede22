"""An execution document naming 10,000 failed hosts: stored, every host recorded once, the
failure decided; a small callback sent meanwhile is answered too (figures: BENCHMARKS.md)."""

from __future__ import annotations

import threading
import time
from typing import Any

from flask import Flask
from sqlalchemy import func, select

from app.models import Decision, HostFailure
from tests.conftest import CALLBACK_TOKEN
from tests.feed import event
from tests.helpers import transaction

URL = f"/callbacks/{CALLBACK_TOKEN}"
HOSTS = 10_000


def test_a_document_with_ten_thousand_failed_hosts(app: Flask, api_headers: dict[str, str]) -> None:
    now = int(time.time() * 1000)
    document = {
        "execution_id": "exec-huge",
        "job_id": "job-huge",
        "account_alias": "XXXX",
        "status": "FAILURE",
        "timers": [{"start": now - 60_000, "end": now - 1000}],
        "failed_hosts": [f"host-{n:05d}" for n in range(HOSTS)],
    }
    answers: dict[str, Any] = {}

    def send(name: str, body: Any) -> None:
        answers[name] = app.test_client().post(URL, json=body)

    big = threading.Thread(target=send, args=("huge", document))
    big.start()
    send("small", event("runner_on_ok", now, "web1", execution_id="exec-small"))
    big.join(120)

    assert answers["huge"].status_code == 202
    assert answers["huge"].get_json() == {"accepted": 1, "duplicates": 0}
    assert answers["small"].status_code == 202
    # The answer waits for processing at most the intake's timeout: on a busy machine the
    # document may still be applying when it comes, so wait for it (not for a time).
    deadline = time.monotonic() + 90
    while True:
        found = app.test_client().get("/api/v1/executions/exec-huge", headers=api_headers)
        if found.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert found.status_code == 200
    detail = found.get_json()
    assert len(detail["failed_hosts"]) == HOSTS
    assert detail["failed_hosts"][:2] == ["host-00000", "host-00001"]
    with transaction(app) as session:
        assert session.scalar(select(func.count()).select_from(HostFailure)) == HOSTS
        decision = session.scalars(select(Decision)).one()
    assert decision.action in {"restart", "skip"}
