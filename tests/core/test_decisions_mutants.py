"""Deciding failed runs and queueing manual restarts, field by field (docs/policy.md).

These tests kill the mutants of app/core/decisions.py that the other core tests leave alive
(docs/TESTING.md): what the engine is given, what is stored for a decision and its outbox
row, which manual restarts are refused and why, and which failures are still undecided.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import delete, insert, select, update
from sqlalchemy.orm import Session, sessionmaker

from app.core.decision_inputs import decision_input
from app.core.decisions import (
    decide_failed_runs,
    queue_manual_restart,
    undecided_failures,
)
from app.core.errors import Conflict, Invalid
from app.core.ingest import ingest_and_decide, parse_deliveries
from app.core.operator import cancel_restart, pause_automatic
from app.db import transaction
from app.models import Decision, Execution, Job, Restart
from app.policy import BudgetUsage, RestartOutcome, parse_policy
from app.policy import HostFailure as PolicyHostFailure
from tests.feed import ACCOUNT, JOB_ID, failing_run_events

NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
T0 = int(NOW.timestamp() * 1000)
RESTART = parse_policy(
    "version: 1\ndefaults: {backoff: {initial: 0s}}\n"
    "limits: {per_job: {restarts: 5, window: 1h}, per_account: null, global: null,"
    " per_host: null}\ncircuit_breaker: null\n",
    "test.yaml",
)
SKIP_ALL = parse_policy("version: 1\ndefaults: {action: skip}\n", "test.yaml")
JOB_GLOBS = parse_policy(
    "version: 1\nrules:\n  - name: web\n    when: {job: 'web-*'}\n    action: skip\n", "test.yaml"
)


def fail(
    sessions: sessionmaker[Session],
    execution_id: str,
    rules: Any = SKIP_ALL,
    failing: tuple[str, ...] = ("web2", "web3"),
    defer: bool = False,
    start: int = T0,
) -> Any:
    feed = failing_run_events(
        start, failing, prefix=f"{execution_id}-{start}", execution_id=execution_id
    )
    with transaction(sessions) as session:
        return ingest_and_decide(session, parse_deliveries(feed, None, 500), NOW, rules, defer)


def execution_of(session: Session, execution_id: str = "exec-a") -> Execution:
    return session.scalars(select(Execution).where(Execution.execution_id == execution_id)).one()


def manual(
    sessions: sessionmaker[Session],
    hosts: Any = None,
    note: str | None = None,
    rules: Any = RESTART,
) -> tuple[Decision, Restart]:
    with transaction(sessions) as session:
        stored = queue_manual_restart(
            session, execution_of(session), hosts, "alice", NOW, rules, note
        )
        assert stored.restart is not None
        return stored.decision, stored.restart


# --- manual restarts ---------------------------------------------------------------------------


def test_a_manual_restart_is_stored_as_its_own_decision(sessions: sessionmaker[Session]) -> None:
    fail(sessions, "exec-a")
    labels = {"action": "restart", "reason_code": "manual", "rule": "manual"}
    before = REGISTRY.get_sample_value("respawn_decisions_total", labels) or 0.0

    decision, restart = manual(sessions, ["web3"], note="disk cleaned")

    assert decision.decision_key.startswith("manual:")
    assert (decision.origin, decision.action, decision.rule, decision.reason_code) == (
        "manual",
        "restart",
        "manual",
        "manual",
    )
    assert (decision.hosts, decision.excluded_hosts, decision.due_at) == (["web3"], [], NOW)
    assert (decision.backoff_seconds, decision.actor, decision.created_at) == (0.0, "alice", NOW)
    assert decision.reason == "manual restart 1 of 2 failed hosts by alice: disk cleaned"
    assert (decision.policy_version, decision.run_index) == (RESTART.version_hash, 0)
    assert (restart.decision_id, restart.manual, restart.state, restart.hosts) == (
        decision.id,
        True,
        "pending",
        ["web3"],
    )
    assert (restart.due_at, restart.created_at, restart.updated_at) == (NOW, NOW, NOW)
    assert (restart.attempts, restart.run_index, restart.timers_before) == (0, 0, 1)
    assert restart.counts_against_budget is False
    assert REGISTRY.get_sample_value("respawn_decisions_total", labels) == before + 1


def test_a_manual_restart_counts_against_budgets_only_with_count_manual(
    sessions: sessionmaker[Session],
) -> None:
    counting = parse_policy("version: 1\nlimits: {count_manual: true}\n", "test.yaml")
    fail(sessions, "exec-a")

    _, restart = manual(sessions, rules=counting)

    assert restart.counts_against_budget is True


def test_every_failed_host_is_restarted_when_none_are_named(
    sessions: sessionmaker[Session],
) -> None:
    fail(sessions, "exec-a")

    decision, restart = manual(sessions)

    assert decision.hosts == restart.hosts == ["web2", "web3"]
    assert decision.reason == "manual restart 2 of 2 failed hosts by alice"


def test_hosts_named_twice_are_restarted_once(sessions: sessionmaker[Session]) -> None:
    fail(sessions, "exec-a")

    decision, _ = manual(sessions, ["web3", "web2", "web3"])

    assert decision.hosts == ["web3", "web2"]


def test_an_empty_host_list_restarts_without_one(sessions: sessionmaker[Session]) -> None:
    fail(sessions, "exec-a")

    decision, restart = manual(sessions, [])

    assert decision.hosts == restart.hosts == []
    assert decision.reason == "manual restart with no host list by alice"


def test_an_execution_that_is_not_failed_cannot_be_restarted(
    sessions: sessionmaker[Session],
) -> None:
    fail(sessions, "exec-a", failing=())

    with pytest.raises(Conflict) as refused:
        manual(sessions)

    assert refused.value.code == "not_failed"
    assert str(refused.value) == ("execution is SUCCESS; only a failed execution can be restarted")


def test_a_second_restart_waits_for_the_first(sessions: sessionmaker[Session]) -> None:
    fail(sessions, "exec-a")
    manual(sessions)

    with pytest.raises(Conflict) as refused:
        manual(sessions)

    assert refused.value.code == "restart_pending"
    assert str(refused.value) == "a restart of this execution is already pending"


def test_a_cancelled_restart_does_not_block_the_next(sessions: sessionmaker[Session]) -> None:
    fail(sessions, "exec-a")
    _, first = manual(sessions)
    with transaction(sessions) as session:
        cancel_restart(session, first.id, "alice", NOW)

    _, second = manual(sessions)

    assert second.id != first.id


def test_only_hosts_that_failed_can_be_restarted(sessions: sessionmaker[Session]) -> None:
    fail(sessions, "exec-a")

    with pytest.raises(Invalid) as refused:
        manual(sessions, ["web2", "web9"])

    assert str(refused.value) == "hosts must be among the execution's failed hosts"
    assert refused.value.fields == {"hosts": ["'web9' did not fail in the current run"]}


def test_a_failure_with_no_known_hosts_needs_an_explicit_empty_list(
    sessions: sessionmaker[Session],
) -> None:
    fail(sessions, "exec-a")
    with transaction(sessions) as session:
        session.execute(update(Execution).values(failed_hosts=[]))

    with pytest.raises(Invalid) as refused:
        manual(sessions)

    assert str(refused.value) == (
        "no failed hosts are known; pass an empty host list to restart without one"
    )
    assert refused.value.fields == {"hosts": ["No failed hosts known."]}


def test_an_init_failure_is_restarted_without_hosts(sessions: sessionmaker[Session]) -> None:
    fail(sessions, "exec-a")
    with transaction(sessions) as session:
        session.execute(update(Execution).values(failed_hosts=[], status="INIT_FAILURE"))

    decision, _ = manual(sessions)

    assert decision.hosts == []


# --- what the engine is given --------------------------------------------------------------------


def test_the_engine_sees_the_current_runs_failures_the_job_and_the_restarts_so_far(
    sessions: sessionmaker[Session],
) -> None:
    fail(sessions, "exec-a", rules=RESTART)  # an automatic restart: counts, budgets too
    fail(sessions, "exec-b", rules=RESTART)  # another execution of the same job
    with transaction(sessions) as session:
        session.add(Job(job_id=JOB_ID, account_alias=ACCOUNT, description="nightly deploy"))
        (automatic,) = session.scalars(
            select(Restart).join(Execution).where(Execution.execution_id == "exec-b")
        )
        cancel_restart(session, automatic.id, "alice", NOW)  # given back
        execution = execution_of(session, "exec-b")
        queue_manual_restart(session, execution, None, "alice", NOW, RESTART)  # not automatic

    later = NOW + dt.timedelta(minutes=5)
    with sessions() as session:
        a = decision_input(session, RESTART, execution_of(session, "exec-a"), later)
        b = decision_input(session, RESTART, execution_of(session, "exec-b"), later)

    assert (a.execution_id, a.account, a.job_id, a.job_description) == (
        "exec-a",
        ACCOUNT,
        JOB_ID,
        "nightly deploy",
    )
    assert (a.status, a.run_index, a.run_count, a.now) == ("FAILURE", 0, 1, later)
    assert a.first_failure_at == dt.datetime.fromtimestamp((T0 + 1000) / 1000, dt.UTC)
    assert a.failed_hosts == (
        PolicyHostFailure(
            "web2",
            "task_failed",
            "non-zero return code\npsql: could not connect to server: Connection timed out",
            0,
        ),
        PolicyHostFailure(
            "web3", "unreachable", "Failed to connect to the host via ssh: Connection refused"
        ),
    )
    assert (a.prior_restarts, b.prior_restarts) == (1, 0)
    assert a.usage == BudgetUsage(per_job=1, per_account=0, global_=0)
    assert a.paused is None


def test_the_engine_sees_no_description_for_a_job_not_fetched(
    sessions: sessionmaker[Session],
) -> None:
    fail(sessions, "exec-a")

    with sessions() as session:
        inp = decision_input(session, RESTART, execution_of(session), NOW)

    assert inp.job_description is None


def test_only_the_failures_of_the_current_run_are_decided_on(
    sessions: sessionmaker[Session],
) -> None:
    fail(sessions, "exec-a", failing=("web2",))
    with transaction(sessions) as session:
        execution = execution_of(session)
        session.execute(update(Execution).where(Execution.id == execution.id).values(run_index=1))

    with sessions() as session:
        inp = decision_input(session, RESTART, execution_of(session), NOW)

    assert inp.failed_hosts == ()


# --- deciding and deferring ---------------------------------------------------------------------


def test_a_decided_failure_is_not_decided_again(sessions: sessionmaker[Session]) -> None:
    first = fail(sessions, "exec-a", rules=RESTART)

    with transaction(sessions) as session:
        again = decide_failed_runs(session, [execution_of(session)], NOW, RESTART)

    assert (first.decided.queued, again.queued) == (1, 0)
    with sessions() as session:
        assert len(session.scalars(select(Decision)).all()) == 1


def test_an_unfetched_jobs_failure_waits_only_when_job_globs_are_used(
    sessions: sessionmaker[Session],
) -> None:
    deferred = fail(sessions, "exec-a", rules=JOB_GLOBS, defer=True)
    decided = fail(sessions, "exec-b", rules=RESTART, defer=True)

    assert (deferred.decided.deferred, deferred.decided.queued) == (1, 0)
    assert (decided.decided.deferred, decided.decided.queued) == (0, 1)


def test_a_fetched_jobs_failure_is_decided_even_with_job_globs(
    sessions: sessionmaker[Session],
) -> None:
    with transaction(sessions) as session:
        session.add(Job(job_id=JOB_ID, account_alias=ACCOUNT, description="web-deploy"))

    result = fail(sessions, "exec-a", rules=JOB_GLOBS, defer=True)

    assert result.decided.deferred == 0
    with sessions() as session:
        (decision,) = session.scalars(select(Decision))
        assert (decision.rule, decision.action) == ("web", "skip")


def test_undecided_failures_are_the_failed_current_runs_without_a_decision(
    sessions: sessionmaker[Session],
) -> None:
    fail(sessions, "exec-a", rules=JOB_GLOBS, defer=True)  # deferred: undecided
    fail(sessions, "exec-b", rules=RESTART)  # decided
    fail(sessions, "exec-c", rules=JOB_GLOBS, defer=True)  # deferred
    fail(sessions, "exec-d", failing=())  # succeeded: nothing to decide
    fail(sessions, "exec-e", rules=RESTART)  # decided, then moved to a new failed run
    with transaction(sessions) as session:
        session.execute(
            update(Execution).where(Execution.execution_id == "exec-e").values(run_index=1)
        )

    with sessions() as session:
        everything = [e.execution_id for e in undecided_failures(session)]
        first = [e.execution_id for e in undecided_failures(session, limit=1)]

    assert everything == ["exec-a", "exec-c", "exec-e"]
    assert first == ["exec-a"]


def test_a_manual_restart_counts_as_the_runs_decision(sessions: sessionmaker[Session]) -> None:
    fail(sessions, "exec-a", rules=JOB_GLOBS, defer=True)
    manual(sessions)

    with sessions() as session:
        assert undecided_failures(session) == []


def test_undecided_failures_are_taken_two_hundred_at_a_time(
    sessions: sessionmaker[Session],
) -> None:
    with transaction(sessions) as session:
        session.execute(
            insert(Execution),
            [
                {"execution_id": f"exec-{n:03d}", "account_alias": ACCOUNT, "job_id": JOB_ID,
                 "status": "FAILURE", "run_index": 0, "status_rank": 4, "run_count": 1,
                 "failed_hosts": [], "first_seen_at": NOW, "last_seen_at": NOW,
                 "restart_count": 0}
                for n in range(201)
            ],
        )  # fmt: skip

    with sessions() as session:
        assert len(undecided_failures(session)) == 200


# --- one batch, several executions -------------------------------------------------------------


def batch(*execution_ids: str, failing: tuple[str, ...] = ("web2", "web3")) -> list[Any]:
    items: list[Any] = []
    for n, execution_id in enumerate(execution_ids):
        items += failing_run_events(
            T0 + n, failing, prefix=f"{execution_id}-", execution_id=execution_id,
            job_id=f"job-{execution_id}",
        )  # fmt: skip
    return items


def decide_batch(
    sessions: sessionmaker[Session], items: list[Any], rules: Any, defer: bool = False
) -> Any:
    with transaction(sessions) as session:
        return ingest_and_decide(session, parse_deliveries(items, None, 500), NOW, rules, defer)


def test_every_execution_of_a_batch_is_decided_and_counted(
    sessions: sessionmaker[Session],
) -> None:
    stored = decide_batch(sessions, batch("exec-b", "exec-c", "exec-d"), RESTART)

    assert (stored.decided.queued, stored.decided.deferred) == (3, 0)


def test_a_decided_execution_does_not_stop_the_rest_of_the_batch(
    sessions: sessionmaker[Session],
) -> None:
    fail(sessions, "exec-a", rules=RESTART)
    fail(sessions, "exec-b", rules=JOB_GLOBS, defer=True)  # deferred: not decided yet

    with transaction(sessions) as session:
        executions = [execution_of(session, "exec-a"), execution_of(session, "exec-b")]
        result = decide_failed_runs(session, executions, NOW, RESTART)

    assert result.queued == 1


def test_every_deferred_failure_of_a_batch_is_counted_and_the_rest_decided(
    sessions: sessionmaker[Session],
) -> None:
    with transaction(sessions) as session:
        session.add(Job(job_id="job-exec-c", account_alias=ACCOUNT, description="web-c"))

    stored = decide_batch(sessions, batch("exec-a", "exec-b", "exec-c"), JOB_GLOBS, defer=True)

    assert (stored.decided.deferred, stored.decided.queued) == (2, 0)
    with sessions() as session:
        (decision,) = session.scalars(select(Decision))
        assert decision.rule == "web"


def test_without_deferral_an_unfetched_jobs_failure_is_decided_at_once(
    sessions: sessionmaker[Session],
) -> None:
    fail(sessions, "exec-a", rules=SKIP_ALL)
    with transaction(sessions) as session:
        session.execute(delete(Decision))

    with transaction(sessions) as session:
        result = decide_failed_runs(session, [execution_of(session)], NOW, JOB_GLOBS)

    assert (result.deferred, result.queued) == (0, 1)


def test_a_skip_queues_nothing(sessions: sessionmaker[Session]) -> None:
    stored = decide_batch(sessions, batch("exec-a", "exec-b"), SKIP_ALL)

    assert stored.decided.queued == 0
    with sessions() as session:
        assert session.scalars(select(Restart)).all() == []


def test_an_automatic_decision_is_stored_with_its_excluded_hosts_and_its_restart(
    sessions: sessionmaker[Session],
) -> None:
    only_web2 = parse_policy(
        "version: 1\ndefaults: {backoff: {initial: 0s}}\n"
        "rules:\n  - name: web2-only\n    when: {host: 'web2'}\n    action: restart\n",
        "test.yaml",
    )
    labels = {"action": "restart", "reason_code": "restart", "rule": "web2-only"}
    before = REGISTRY.get_sample_value("respawn_decisions_total", labels) or 0.0

    fail(sessions, "exec-a", rules=only_web2)

    assert REGISTRY.get_sample_value("respawn_decisions_total", labels) == before + 1
    with sessions() as session:
        (decision,) = session.scalars(select(Decision))
        (restart,) = session.scalars(select(Restart))
        assert (decision.origin, decision.action, decision.rule, decision.hosts) == (
            "policy",
            "restart",
            "web2-only",
            ["web2"],
        )
        assert decision.created_at == NOW
        (excluded,) = decision.excluded_hosts
        assert set(excluded) == {"host", "code", "reason"}
        assert (excluded["host"], excluded["code"]) == ("web3", "not_matched")
        assert excluded["reason"]
        assert (restart.decision_id, restart.manual, restart.counts_against_budget) == (
            decision.id,
            False,
            True,
        )
        assert (restart.created_at, restart.updated_at, restart.due_at) == (NOW, NOW, NOW)


def test_the_engine_sees_host_history_recent_outcomes_and_the_pause(
    sessions: sessionmaker[Session],
) -> None:
    limits = parse_policy(
        "version: 1\nlimits: {per_host: {failures: 3, window: 1h, quarantine: 30m}}\n"
        "circuit_breaker: {window: 15m, cool_down: 10m, min_restarts: 2, failure_ratio: 0.5}\n",
        "test.yaml",
    )
    fail(sessions, "exec-a", failing=("web3", "web2"))
    with transaction(sessions) as session:
        session.add(Job(job_id=JOB_ID, account_alias=ACCOUNT, description=None))
        pause_automatic(session, JOB_ID, "alice", NOW)
        execution = execution_of(session)
        decision = session.scalars(select(Decision)).one()
        session.add(
            Restart(
                decision_id=decision.id, execution_pk=execution.id, run_index=0, manual=False,
                counts_against_budget=True, state="done", hosts=[], due_at=NOW, attempts=1,
                timers_before=1, created_at=NOW, updated_at=NOW, result="failed_again",
                result_at=NOW,
            )
        )  # fmt: skip

    with sessions() as session:
        inp = decision_input(session, limits, execution_of(session), NOW)

    def at(ms: int) -> dt.datetime:
        return dt.datetime.fromtimestamp(ms / 1000, dt.UTC)

    assert [h.host for h in inp.failed_hosts] == ["web2", "web3"]
    assert dict(inp.host_failure_times) == {"web2": (at(T0 + 301),), "web3": (at(T0 + 300),)}
    assert inp.restart_outcomes == (RestartOutcome(NOW, True),)
    assert inp.paused == "automatic restarts paused for this job by alice"
