"""A Runner that echoes what it was sent, mangled: no run of 16 characters of a secret
respawn sent reaches the database, the API or the log (docs/security.md)."""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import re
import secrets
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.core.ingest import ingest_and_decide, parse_deliveries
from app.core.outbox import RetryPolicy, claim_due_restarts, record_result, send_restart
from app.db import transaction
from app.models import Restart, RestartAttempt
from app.policy import parse_policy
from app.redact import MIN_RUN, KnownSecrets
from app.runner import RunnerClient
from tests.feed import failing_run_events
from tests.runner.fakes import API, AUTH, FakeRunner, Seen, fake_session

POLICY = parse_policy("version: 1\ndefaults: {backoff: {initial: 0s}}\n", "test.yaml")


def leaked_runs(text: str, secret: str) -> list[str]:
    """Every run of MIN_RUN characters of `secret` found in `text`, however mangled."""
    flat = re.sub(r"\s+", "", text).casefold()
    normal = re.sub(r"\s+", "", secret).casefold()
    return [normal[i : i + MIN_RUN] for i in range(len(normal) - MIN_RUN + 1)
            if normal[i : i + MIN_RUN] in flat]  # fmt: skip


def mangle(kind: str, body: str) -> str:
    if kind == "wrapped":
        return "\n".join(body[i : i + 60] for i in range(0, len(body), 60))
    if kind == "spaced":
        return " ".join(body[:600])
    if kind == "upper":
        return body.upper()
    return body[:300]  # truncated


@pytest.mark.parametrize("kind", ["wrapped", "spaced", "upper", "truncated"])
def test_an_echoed_restart_body_leaves_no_secret_behind(
    sessions: sessionmaker[Session],
    tmp_path: Path,
    kind: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    now = dt.datetime.now(dt.UTC)  # the claim's lease runs on the real clock
    material = (
        "-----BEGIN OPENSSH PRIVATE KEY-----\n"
        + "\n".join(secrets.token_urlsafe(48) for _ in range(20))
        + "\n-----END OPENSSH PRIVATE KEY-----\n"
    )
    (tmp_path / "web.pem").write_text(material)
    keys = tmp_path / "keys.yaml"
    keys.write_text('"*": web.pem\n')
    encoded = base64.b64encode(material.encode()).decode()
    password = "runner-" + secrets.token_hex(12)

    feed = failing_run_events(int(now.timestamp() * 1000) - 60_000, execution_id="exec-echo")
    with transaction(sessions) as session:
        ingest_and_decide(session, parse_deliveries(feed, None, 500), now, POLICY, False)
    with transaction(sessions) as session:
        (claim,) = claim_due_restarts(session, "w1", now, 60.0, 1)

    fake = FakeRunner()

    def handler(seen: Seen) -> Any:
        if seen.method == "POST":
            echoed = mangle(kind, json.dumps(seen.json))
            return (400, {"message": f"invalid request: {echoed}", "password": password})
        return (200, {"execution_id": "exec-echo", "job_id": claim.job_id,
                      "account_alias": claim.account, "status": "FAILURE",
                      "timers": [{"start": 1, "end": 2}], "failed_hosts": ["web2"]})  # fmt: skip

    fake.handler = handler
    client = RunnerClient(fake_session(fake), API, AUTH, "ops", password, sleep=lambda _: None)

    result = send_restart(client, claim, str(keys), 13.0)
    with transaction(sessions) as session:
        record_result(session, claim, "w1", result, now, RetryPolicy(3, 1.0, 10.0))

    with sessions() as session:
        stored = " ".join(
            [a.detail or "" for a in session.scalars(select(RestartAttempt))]
            + [r.outcome_detail or "" for r in session.scalars(select(Restart))]
        )
    assert result.outcome == "rejected"
    assert "invalid request" in stored  # the Runner's words are kept, minus the secrets
    for text in (stored, result.detail, caplog.text):
        assert leaked_runs(text, encoded) == []
        assert leaked_runs(text, material) == []
        assert password not in text.casefold()


def test_known_secrets_scrub_runs_not_words() -> None:
    known = KnownSecrets()
    secret = secrets.token_urlsafe(64)
    known.add(secret, "short-pass")

    # '#' is outside the token alphabet, so the run cannot grow into its neighbours
    assert known.scrub(f"# {secret[10:26]} #") == "# [redacted] #"
    assert known.scrub(f"# {secret[10:25]} #") == f"# {secret[10:25]} #"  # 15: too short a run
    assert known.scrub("the SHORT-PASS was wrong") == "the [redacted] was wrong"
    assert known.scrub("nothing to see here, move along please") == (
        "nothing to see here, move along please"
    )
