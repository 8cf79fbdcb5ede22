"""The documented guarantees, each defended by a test named for it, directly on the core.

Each test here fails when its guarantee is broken on purpose; `make mutate` applies those
breakages one by one and checks that the named test catches each (docs/TESTING.md).
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.core.ingest import ingest_and_decide, parse_deliveries, record_documents
from app.core.operator import cancel_restart, manual_restart
from app.core.outbox import CallResult, RetryPolicy, claim_due_restarts, record_result
from app.db import transaction
from app.models import Decision, Event, Execution, Restart, RestartState
from app.policy import Policy, parse_policy
from app.runner.documents import ExecutionDocument, Timer
from tests.feed import ACCOUNT, JOB_ID, failing_run_events

NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
T0 = int(NOW.timestamp() * 1000)
BUDGET_OF_ONE = """
version: 1
defaults: {backoff: {initial: 0s}}
limits: {per_job: {restarts: 1, window: 1h}, global: null, per_account: null, per_host: null}
circuit_breaker: null
"""
SKIP_ALL = "version: 1\ndefaults: {action: skip}\n"
RETRY = RetryPolicy(max_attempts=5, base_seconds=1.0, uncertain_seconds=10.0)


def policy(text: str) -> Policy:
    return parse_policy(text, "test.yaml")


def fail(sessions: sessionmaker[Session], execution_id: str, rules: Policy) -> Decision:
    """A failing run of `execution_id` (job JOB_ID) arrives and is decided under `rules`."""
    feed = failing_run_events(T0, prefix=execution_id[:6], execution_id=execution_id)
    with transaction(sessions) as session:
        ingest_and_decide(session, parse_deliveries(feed, None, 500), NOW, rules, False)
    with sessions() as session:
        return session.scalars(
            select(Decision)
            .join(Execution, Execution.id == Decision.execution_pk)
            .where(Execution.execution_id == execution_id, Decision.origin == "policy")
        ).one()


def test_manual_restarts_do_not_use_up_budgets(sessions: sessionmaker[Session]) -> None:
    """docs/policy.md: manual restarts count against budgets only with `count_manual`."""
    fail(sessions, "exec-a", policy(SKIP_ALL))
    with transaction(sessions) as session:
        manual_restart(session, "exec-a", None, "alice", NOW, policy(BUDGET_OF_ONE))

    decision = fail(sessions, "exec-b", policy(BUDGET_OF_ONE))

    assert (decision.action, decision.reason_code) == ("restart", "restart")


def test_manual_restarts_use_up_budgets_with_count_manual(sessions: sessionmaker[Session]) -> None:
    counting = policy(
        BUDGET_OF_ONE.replace("per_host: null}", "per_host: null, count_manual: true}")
    )
    fail(sessions, "exec-a", policy(SKIP_ALL))
    with transaction(sessions) as session:
        manual_restart(session, "exec-a", None, "alice", NOW, counting)

    decision = fail(sessions, "exec-b", counting)

    assert (decision.action, decision.reason_code) == ("skip", "budget_per_job")


def test_cancelled_restarts_do_not_use_up_budgets(sessions: sessionmaker[Session]) -> None:
    """docs/policy.md: a cancelled restart gives its place in the budget back."""
    first = fail(sessions, "exec-a", policy(BUDGET_OF_ONE))
    assert first.action == "restart"
    with transaction(sessions) as session:
        restart = session.scalars(select(Restart).where(Restart.decision_id == first.id)).one()
        cancel_restart(session, restart.id, "alice", NOW)

    decision = fail(sessions, "exec-b", policy(BUDGET_OF_ONE))

    assert (decision.action, decision.reason_code) == ("restart", "restart")


def test_a_queued_restart_uses_up_the_budget(sessions: sessionmaker[Session]) -> None:
    fail(sessions, "exec-a", policy(BUDGET_OF_ONE))

    decision = fail(sessions, "exec-b", policy(BUDGET_OF_ONE))

    assert (decision.action, decision.reason_code) == ("skip", "budget_per_job")


def test_an_answer_is_recorded_only_while_the_lease_is_held(
    sessions: sessionmaker[Session],
) -> None:
    """docs/operations.md: a dispatcher whose lease expired records its attempt, but the row
    belongs to the one that claimed it since; that one verifies before it sends."""
    fail(sessions, "exec-a", policy(BUDGET_OF_ONE))
    with transaction(sessions) as session:
        (slow,) = claim_due_restarts(session, "slow", NOW, 10.0, 1)
    later = NOW + dt.timedelta(seconds=11)
    with transaction(sessions) as session:
        (fresh,) = claim_due_restarts(session, "fresh", later, 10.0, 1)
    done = CallResult("restarted", "done", 200, "execution is PENDING")

    with transaction(sessions) as session:
        state = record_result(session, slow, "slow", done, later, RETRY)

    assert state == RestartState.IN_FLIGHT
    with sessions() as session:
        restart = session.get(Restart, fresh.restart_id)
        execution = session.scalars(select(Execution)).one()
        assert restart is not None
        assert (restart.state, restart.lease_owner, restart.sent_at) == ("in_flight", "fresh", None)
        assert (execution.restart_count, execution.status) == (0, "FAILURE")
    with transaction(sessions) as session:
        assert record_result(session, fresh, "fresh", done, later, RETRY) == RestartState.DONE


def test_documents_respawn_fetches_are_redacted_before_storage(
    sessions: sessionmaker[Session],
) -> None:
    """docs/operations.md: secrets never reach the database, whoever fetched the document."""
    planted = (
        "-----BEGIN OPENSSH PRIVATE KEY-----\nPLANTEDKEY0123\n-----END OPENSSH PRIVATE KEY-----"
    )
    secrets = {"sshPrivateKey": planted, "repository": {"credentials": {"password": "pw-PLANTED"}}}
    document = ExecutionDocument(
        "exec-a", JOB_ID, ACCOUNT, "FAILURE", (Timer(T0, T0 + 1000),), ("web2",), None, None,
        None, extra=secrets,
    )  # fmt: skip

    with transaction(sessions) as session:
        record_documents(session, [document], NOW)

    with sessions() as session:
        stored = json.dumps([e.payload for e in session.scalars(select(Event))])
    assert "PLANTEDKEY0123" not in stored
    assert "pw-PLANTED" not in stored
    assert '"sshPrivateKey": "[redacted]"' in stored


def test_a_late_document_never_moves_an_execution_back_to_an_older_run(
    sessions: sessionmaker[Session],
) -> None:
    """An older document, different from anything stored (so not dropped as a duplicate),
    arrives after the execution moved on to its next run: it is stored, and changes nothing."""
    newer = document(status="RUNNING", timers=[(T0, T0 + 1000), (T0 + 5000, None)])
    older = document(status="FAILURE", timers=[(T0, T0 + 1000)], failed=("web2",))
    with transaction(sessions) as session:
        record_documents(session, [newer], NOW)
    with transaction(sessions) as session:
        result = record_documents(session, [older], NOW)

    assert result.accepted == 1
    with sessions() as session:
        execution = session.scalars(select(Execution)).one()
        assert (execution.status, execution.run_index, execution.failed_hosts) == (
            "RUNNING",
            1,
            [],
        )


def document(status: str, timers: list[tuple[int, int | None]], failed: Any = ()) -> Any:
    return ExecutionDocument(
        "exec-a", JOB_ID, ACCOUNT, status, tuple(Timer(s, e) for s, e in timers), tuple(failed),
        None, None, None,
    )  # fmt: skip
