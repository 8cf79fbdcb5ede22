"""`respawn policy explain` and `respawn policy backtest`, run as a user runs them.

The record is seeded through `/callbacks` of an app on the test's database; the commands then
build their own app from the environment, as they do in production.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import event, func, select, update
from sqlalchemy.engine import Engine

from app.cli import main
from app.core import backtest
from app.models import Decision
from app.policy import parse_policy
from tests.conftest import CALLBACK_TOKEN
from tests.feed import EXECUTION_ID, failing_run_events
from tests.helpers import cli_env, transaction

URL = f"/callbacks/{CALLBACK_TOKEN}"
# Recent, so the default deadline (6h after the first failure) has not passed.
T0 = int(time.time() * 1000) - 600_000

POLICY = """\
version: 1
defaults:
  backoff: {initial: 0s}
rules:
  - name: no-db-migrations
    when: {job: "db-migrate*"}
    action: skip
  - name: flaky-network
    when:
      failure: [unreachable]
      message: "(?i)timed out|connection refused"
    max_restarts: 5
    backoff: {initial: 60s, jitter: 0}
"""


@pytest.fixture
def env(database_url: str, policy_file: Path) -> dict[str, str]:
    policy_file.write_text(POLICY)
    env = cli_env(database_url, policy_file, RESPAWN_DISPATCHER="off", RESPAWN_LOG_LEVEL="WARNING")
    return env | {"RESPAWN_CALLBACK_TOKENS": CALLBACK_TOKEN}


@pytest.fixture
def seeded(env: dict[str, str], make_app: Callable[..., Flask]) -> Flask:
    """The app that receives the feed (the policy in `env` is the current one)."""
    return make_app()


def respawn(env: dict[str, str], *args: str) -> Result:
    return CliRunner().invoke(main, list(args), env=env)


def post(client: FlaskClient, body: Any) -> None:
    response = client.post(URL, data=json.dumps(body), content_type="application/json")
    assert response.status_code == 202, response.get_json()


def fail(
    client: FlaskClient,
    n: int,
    job_id: str = "job-1",
    failing: tuple[str, ...] = ("web3",),
    start_ms: int = T0,
    run: int = 0,
) -> str:
    """Execution exec-N's run RUN fails (web3 unreachable by default); returns its id."""
    execution_id = f"exec-{n}"
    events = failing_run_events(
        start_ms + run * 100_000,
        failing=failing,
        prefix=f"e{n}r{run}-",
        execution_id=execution_id,
        job_id=job_id,
    )
    post(client, events)
    return execution_id


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# --- explain ------------------------------------------------------------------------------------


def test_explain_a_restarted_failure(seeded: Flask, env: dict[str, str]) -> None:
    post(seeded.test_client(), failing_run_events(T0, failing=("web3",), job_id="job-1"))

    result = respawn(env, "policy", "explain", EXECUTION_ID)

    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "decision: restart (restart)" in out
    assert "rule:     flaky-network" in out
    assert "hosts:    web3" in out
    assert "no match no-db-migrations" in out
    assert "job 'job-1' does not match 'db-migrate*'" in out
    assert "match    flaky-network" in out
    assert "ok   budget_per_job:" in out
    assert f"{env['RESPAWN_POLICY_FILE']} (in force)" in out
    stored = out.split("stored decisions (to compare):\n", 1)[1]
    version = parse_policy(POLICY).version_hash
    assert "status FAILURE in run 1 of 1," in out  # runs counted from 1, as in the admin UI
    assert "  run 1  " in stored and "policy  restart  rule flaky-network  restart" in stored
    assert f"policy {version}" in stored


def test_explain_under_another_policy_file(
    seeded: Flask, env: dict[str, str], tmp_path: Path
) -> None:
    post(seeded.test_client(), failing_run_events(T0, failing=("web3",), job_id="job-1"))
    other = write(
        tmp_path,
        "other.yaml",
        "version: 1\nrules:\n  - name: hands-off\n    when: {job: 'job-*'}\n    action: skip\n",
    )

    result = respawn(env, "policy", "explain", EXECUTION_ID, "--policy", str(other))

    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "decision: skip (rule_skip)" in out
    assert "rule:     hands-off" in out
    assert "FAIL rule_skip: rule hands-off says skip" in out
    assert f"policy {other}, version {parse_policy(other.read_text()).version_hash}" in out
    assert "rule flaky-network  restart" in out  # the stored decision, for comparison


def test_explain_a_healthy_execution(seeded: Flask, env: dict[str, str]) -> None:
    post(seeded.test_client(), failing_run_events(T0, failing=()))

    result = respawn(env, "policy", "explain", EXECUTION_ID)

    assert result.exit_code == 0, result.output
    assert "status SUCCESS" in result.stdout
    assert "not failed:" in result.stdout
    assert "decision: skip (not_failed)" in result.stdout
    assert "stored decisions: none" in result.stdout


def test_explain_json(seeded: Flask, env: dict[str, str]) -> None:
    post(seeded.test_client(), failing_run_events(T0, failing=("web2",), job_id="db-migrate-1"))

    result = respawn(env, "policy", "explain", EXECUTION_ID, "--json")

    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["failed"] is True
    assert (body["decision"]["action"], body["decision"]["rule"]) == ("skip", "no-db-migrations")
    assert [r["matched"] for r in body["rules"]] == [True, False]
    assert body["checks"][2] == {
        "code": "rule_skip",
        "passed": False,
        "detail": "rule no-db-migrations says skip",
    }
    (stored,) = body["stored_decisions"]
    assert (stored["origin"], stored["reason_code"]) == ("policy", "rule_skip")


def test_explain_an_unknown_execution(seeded: Flask, env: dict[str, str]) -> None:
    result = respawn(env, "policy", "explain", "no-such-execution")

    assert result.exit_code == 1
    assert result.stderr == "Error: no execution 'no-such-execution'\n"
    assert "Traceback" not in result.output


@pytest.mark.parametrize("command", ["explain", "backtest"])
def test_an_invalid_policy_file_is_refused_with_its_lines(
    seeded: Flask, env: dict[str, str], tmp_path: Path, command: str
) -> None:
    bad = write(tmp_path, "bad.yaml", "version: 1\ndefaults:\n  max_restart: 3\n")
    args = [EXECUTION_ID] if command == "explain" else []

    result = respawn(env, "policy", command, *args, "--policy", str(bad))

    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.startswith(f"{bad}:3: unknown key 'max_restart' in defaults")


# --- backtest -----------------------------------------------------------------------------------


def backtest_json(env: dict[str, str], policy: Path, *args: str) -> dict[str, Any]:
    result = respawn(env, "policy", "backtest", "--policy", str(policy), "--json", *args)
    assert result.exit_code == 0, result.output
    body: dict[str, Any] = json.loads(result.stdout)
    return body


def test_backtest_candidate_skips_a_job_the_current_policy_restarted(
    seeded: Flask, env: dict[str, str], tmp_path: Path
) -> None:
    client = seeded.test_client()
    for n in range(3):
        fail(client, n, job_id="job-1")
    fail(client, 3, job_id="job-2")
    candidate = write(
        tmp_path,
        "candidate.yaml",
        "version: 1\nrules:\n  - name: leave-job-1\n    when: {job: job-1}\n    action: skip\n",
    )

    result = respawn(env, "policy", "backtest", "--policy", str(candidate))

    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "failed runs decided:            4" in out
    assert "decisions that differ:          4 (3 in action)" in out  # job-2: by another rule
    assert f"{'restarts':32}{4:>10}{1:>11}" in out
    assert f"  {'rule_skip':30}{0:>10}{3:>11}" in out
    assert f"  {'job-1':30}{3:>10}{0:>11}" in out
    assert f"  {'web3':30}{4:>10}{1:>11}" in out
    assert "sample differences (first 4 of 4):" in out
    assert "exec-0 run 1  job job-1" in out
    assert "current:   restart [web3] by flaky-network (restart)" in out
    assert "candidate: skip by leave-job-1 (rule_skip): skip by rule leave-job-1" in out

    body = backtest_json(env, candidate)
    assert (body["failed_runs"], body["replayed"], body["differ"]) == (4, 4, 4)
    assert body["current"]["restarts"] == 4
    assert body["candidate"]["restarts"] == 1
    assert body["candidate"]["skips"] == {"rule_skip": 3}
    assert body["current_versions"] == {parse_policy(POLICY).version_hash: 4}
    assert body["per_job"] == [
        {"key": "job-1", "current": 3, "candidate": 0},
        {"key": "job-2", "current": 1, "candidate": 1},
    ]
    differences = {(s["execution_id"], s["candidate"]["action"]) for s in body["samples"]}
    assert ("exec-0", "skip") in differences and ("exec-3", "restart") in differences


def test_backtest_per_job_budget_trips(seeded: Flask, env: dict[str, str], tmp_path: Path) -> None:
    client = seeded.test_client()
    for n in range(4):
        fail(client, n, job_id="job-1")
    candidate = write(
        tmp_path, "budget.yaml", POLICY + "limits:\n  per_job: {restarts: 2, window: 1h}\n"
    )

    body = backtest_json(env, candidate)

    assert body["current"]["restarts"] == 4
    assert body["candidate"]["restarts"] == 2
    assert body["candidate"]["trips"] == {"budget_per_job": 2}
    assert body["current"]["trips"] == {}
    assert [s["execution_id"] for s in body["samples"]] == ["exec-2", "exec-3"]
    assert body["samples"][0]["candidate"]["reason_code"] == "budget_per_job"


def test_backtest_simulates_the_breaker_from_the_next_runs(
    seeded: Flask, env: dict[str, str], tmp_path: Path
) -> None:
    client = seeded.test_client()
    fail(client, 0, run=0)
    fail(client, 0, run=1)  # the restart of run 0 failed again
    fail(client, 1)
    candidate = write(
        tmp_path,
        "breaker.yaml",
        POLICY + "circuit_breaker: {min_restarts: 1, failure_ratio: 0.5, window: 1h}\n",
    )

    body = backtest_json(env, candidate)

    assert body["current"]["restarts"] == 3  # the dispatcher is off: no outcome is known live
    assert body["candidate"]["restarts"] == 1
    assert body["candidate"]["trips"] == {"breaker_open": 2}


def test_backtest_runs_the_candidate_never_reaches(
    seeded: Flask, env: dict[str, str], tmp_path: Path
) -> None:
    client = seeded.test_client()
    fail(client, 0, run=0)
    fail(client, 0, run=1)
    candidate = write(tmp_path, "skip.yaml", "version: 1\ndefaults: {action: skip}\n")

    body = backtest_json(env, candidate)

    assert (body["failed_runs"], body["replayed"], body["not_reached"]) == (2, 1, 1)
    assert body["not_reached_restarted"] == 1
    assert (body["current"]["restarts"], body["candidate"]["restarts"]) == (2, 0)


def test_backtest_since_leaves_out_older_decisions(
    seeded: Flask, env: dict[str, str], tmp_path: Path
) -> None:
    client = seeded.test_client()
    fail(client, 0)
    fail(client, 1)
    with transaction(seeded) as session:
        first = session.scalar(select(func.min(Decision.id)))
        session.execute(
            update(Decision)
            .where(Decision.id == first)
            .values(created_at=dt.datetime.now(dt.UTC) - dt.timedelta(days=40))
        )
    candidate = write(tmp_path, "same.yaml", POLICY)

    assert backtest_json(env, candidate)["failed_runs"] == 1  # the default: 30d
    assert backtest_json(env, candidate, "--since", "7d")["failed_runs"] == 1
    both = backtest_json(env, candidate, "--since", "60d")
    assert both["failed_runs"] == 2
    assert (both["current"]["restarts"], both["candidate"]["restarts"], both["differ"]) == (
        2,
        2,
        0,
    )

    result = respawn(env, "policy", "backtest", "--policy", str(candidate), "--since", "soon")
    assert result.exit_code == 2
    assert "'soon' is not a duration" in result.stderr


@pytest.fixture
def statements() -> Iterator[list[str]]:
    """Every SQL statement any engine runs while the test does."""
    seen: list[str] = []

    def record(*args: Any) -> None:
        seen.append(args[2])

    event.listen(Engine, "before_cursor_execute", record)
    yield seen
    event.remove(Engine, "before_cursor_execute", record)


def test_backtest_streams_in_batches(
    seeded: Flask,
    env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    statements: list[str],
) -> None:
    client = seeded.test_client()
    for n in range(5):
        # web3's fifth failure within a day quarantines it, in the replay as it did live.
        fail(client, n, failing=("web2", "web3"))
    candidate = write(tmp_path, "same.yaml", POLICY)
    monkeypatch.setattr(backtest, "BATCH_SIZE", 2)
    statements.clear()

    body = backtest_json(env, candidate)

    assert body["failed_runs"] == 5 and body["differ"] == 0
    assert body["candidate"]["trips"] == {"quarantine": 1}
    reads = [s for s in statements if "FROM decisions JOIN executions" in s]
    assert len(reads) == 3  # 2 + 2 + 1, each a keyset page with a LIMIT
    assert all("LIMIT" in s for s in reads)
    assert len([s for s in statements if "FROM host_failures" in s]) == 3
