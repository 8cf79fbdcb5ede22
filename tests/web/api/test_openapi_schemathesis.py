"""The HTTP interface against its own OpenAPI document, on SQLite and PostgreSQL.

schemathesis reads `/api/v1/openapi.json` from the app and sends every documented operation
valid and invalid requests built from it, authenticated, against a database seeded with
failed executions, pending restarts and a pause. Every answer must be documented: no 5xx, a
documented status code and content type, and a body that matches the schema of that answer,
the error shape included. Path parameters are often swapped for ids that exist, so detail and
action routes answer with data, not only 404s.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import FlakyStrategyDefinition
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import API_TOKEN, CALLBACK_TOKEN
from tests.feed import failing_run_events

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
EXAMPLES = 10
T0 = int(time.time() * 1000) - 600_000


@dataclass(frozen=True)
class Seeded:
    """What exists in the seeded database, by path parameter name."""

    app: Flask
    values: dict[str, list[Any]]


@pytest.fixture
def seeded(make_app: Callable[..., Flask]) -> Seeded:
    app = make_app()
    client = app.test_client()
    headers = {"Authorization": f"Bearer {API_TOKEN}"}

    def post(body: Any) -> None:
        response = client.post(
            f"/callbacks/{CALLBACK_TOKEN}", data=json.dumps(body), content_type="application/json"
        )
        assert response.status_code == 202, response.get_json()

    executions = [f"exec-{n}" for n in range(4)]
    for n, execution_id in enumerate(executions[:3]):
        post(
            failing_run_events(
                T0 + n * 10_000, prefix=f"s{n}", execution_id=execution_id, job_id=f"job-{n}"
            )
        )
    post(failing_run_events(T0 + 40_000, failing=(), prefix="s3", execution_id=executions[3]))
    assert client.put("/api/v1/pauses/jobs/job-1", headers=headers, json={}).status_code == 200

    restarts, signatures = [], []
    for execution_id in executions:
        detail = client.get(f"/api/v1/executions/{execution_id}", headers=headers).get_json()
        restarts += [restart["id"] for restart in detail["restarts"]]
        signatures += [d["signature"] for d in detail["decisions"] if d["signature"]]
    assert restarts and signatures
    return Seeded(
        app,
        {
            "execution_id": executions,
            "restart_id": restarts,
            "key": signatures,
            "job_id": ["job-1", "job-2"],
            "token": [CALLBACK_TOKEN],
        },
    )


def cases(operation: Any) -> st.SearchStrategy[Any]:
    return st.one_of(
        operation.as_strategy(GenerationMode.POSITIVE),
        operation.as_strategy(GenerationMode.NEGATIVE),
    )


def test_every_answer_is_documented(seeded: Seeded) -> None:
    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", seeded.app)
    headers = {"Authorization": f"Bearer {API_TOKEN}"}
    failures: dict[str, str] = {}
    operations = [result.ok() for result in schema.get_all_operations()]
    document = seeded.app.test_client().get("/api/v1/openapi.json").get_json()
    documented = {f"{m.upper()} {path}" for path, ops in document["paths"].items() for m in ops}
    # every operation is tried but the document's own, which schemathesis leaves out
    assert {op.label for op in operations} == documented - {"GET /api/v1/openapi.json"}

    for operation in operations:

        @given(case=cases(operation), data=st.data())
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def answers_as_documented(case: Any, data: st.DataObject) -> None:
            for name in case.path_parameters or {}:
                if name in seeded.values and data.draw(st.booleans(), label=f"known {name}"):
                    case.path_parameters[name] = data.draw(st.sampled_from(seeded.values[name]))
            case.call_and_validate(headers=headers, checks=CHECKS)

        for attempt in (1, 2):
            try:
                answers_as_documented()
            except FlakyStrategyDefinition:
                # Rarely, schemathesis does not build the same case twice from the same
                # choices, a fault of its generation and no answer of ours: one more try.
                if attempt == 2:
                    failures[operation.label] = "schemathesis generated inconsistently twice"
                continue
            except Exception as exc:  # noqa: BLE001  (each operation's failure is reported below)
                failures[operation.label] = f"{type(exc).__name__}: {exc}"
            break

    assert failures == {}
