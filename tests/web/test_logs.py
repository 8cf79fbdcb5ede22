"""JSON logs (`RESPAWN_LOG_FORMAT=json`): one object per line, the request's id and the
execution, job and account on the lines about them, never a secret."""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask

from app.logging_setup import JSONFormatter, configure_logging
from tests.conftest import CALLBACK_TOKEN
from tests.feed import ACCOUNT, EXECUTION_ID, JOB_ID, failing_run_events

PLANTED = "hunter2-planted-secret-0123456789"


@pytest.fixture
def json_app(make_app: Callable[..., Flask]) -> Iterator[Flask]:
    app = make_app(log_format="json", log_level="INFO")
    yield app
    configure_logging("WARNING", "text")  # the root logger is the process's: put it back


@pytest.fixture
def written(json_app: Flask) -> Iterator[io.StringIO]:
    """What respawn's log handler writes, as it would reach stderr."""
    (handler,) = [h for h in logging.getLogger().handlers if isinstance(h.formatter, JSONFormatter)]
    assert isinstance(handler, logging.StreamHandler)
    buffer = io.StringIO()
    # Swapped without `setStream`, which flushes the stream it replaces: the handler may
    # still hold the stderr an earlier test's capture has closed since.
    previous, handler.stream = handler.stream, buffer
    yield buffer
    handler.stream = previous


def lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_json_lines_carry_the_request_and_the_execution(
    json_app: Flask, written: io.StringIO
) -> None:
    client = json_app.test_client()
    items = failing_run_events(int(time.time() * 1000) - 60_000)
    items[0]["message"]["password"] = PLANTED

    response = client.post(
        f"/callbacks/{CALLBACK_TOKEN}",
        data=json.dumps(items),
        content_type="application/json",
        headers={"X-Request-Id": "req-42"},
    )

    assert response.status_code == 202
    assert response.headers["X-Request-Id"] == "req-42"
    err = written.getvalue()
    records = lines(err)  # every line is one JSON object
    request = next(r for r in records if r["logger"] == "app.web.requests")
    assert (request["request_id"], request["status"], request["method"]) == ("req-42", 202, "POST")
    assert CALLBACK_TOKEN not in request["path"]
    decision = next(r for r in records if r["logger"] == "app.core.decisions")
    assert (decision["execution_id"], decision["job_id"], decision["account"]) == (
        EXECUTION_ID,
        JOB_ID,
        ACCOUNT,
    )
    assert PLANTED not in err and CALLBACK_TOKEN not in err


def test_a_made_up_request_id_replaces_one_that_is_not_a_plain_token(json_app: Flask) -> None:
    response = json_app.test_client().get("/healthz", headers={"X-Request-Id": "a b\\nc"})

    given = response.headers["X-Request-Id"]
    assert given != "a b\\nc" and len(given) == 32


def test_an_unknown_log_format_is_refused(make_app: Callable[..., Flask]) -> None:
    from app.config import ConfigError

    with pytest.raises(ConfigError, match="RESPAWN_LOG_FORMAT"):
        make_app(log_format="xml")
