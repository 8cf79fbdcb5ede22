"""`app.core.ingest` on a session, without HTTP: store, deduplicate, order, decide."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from app.core.errors import Invalid
from app.core.ingest import (
    IngestResult,
    advance_to_run,
    ingest_and_decide,
    parse_deliveries,
    record_answer,
    record_deliveries,
    record_documents,
)
from app.db import transaction
from app.models import Decision, Event, Execution, ExecutionRun, HostFailure, Restart, RestartState
from app.policy import parse_policy
from app.runner.documents import ExecutionDocument, Timer
from tests.feed import ACCOUNT, EXECUTION_ID, JOB_ID, event, failing_run_events
from tests.helpers import counted_statements

NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
T0 = 1_772_366_400_000  # 2026-03-01 12:00 UTC in ms
POLICY = parse_policy("version: 1\ndefaults:\n  backoff: {initial: 0s}\n", "test.yaml")
JOB_GLOB_POLICY = parse_policy(
    "version: 1\nrules:\n  - name: deploys\n    when: {job: 'deploy*'}\n    action: skip\n",
    "globs.yaml",
)


def store(
    sessions: sessionmaker[Session], body: Any, webhook_id: str | None = None
) -> IngestResult:
    with transaction(sessions) as session:
        return record_deliveries(session, parse_deliveries(body, webhook_id, 500), NOW)


def execution(session: Session, execution_id: str = EXECUTION_ID) -> Execution:
    return session.scalars(select(Execution).where(Execution.execution_id == execution_id)).one()


def count(session: Session, model: Any) -> int:
    return session.scalar(select(func.count()).select_from(model)) or 0


def test_a_failing_run_is_stored_with_its_failed_hosts(sessions: sessionmaker[Session]) -> None:
    result = store(sessions, failing_run_events(T0))

    assert (result.accepted, result.duplicates) == (7, 0)
    with sessions() as session:
        stored = execution(session)
        assert (stored.status, stored.run_index, stored.job_id, stored.account_alias) == (
            "FAILURE",
            0,
            JOB_ID,
            ACCOUNT,
        )
        assert sorted(stored.failed_hosts) == ["web2", "web3"]
        failures = {
            f.host: (f.failure_class, f.message, f.rc) for f in session.scalars(select(HostFailure))
        }
        assert failures == {
            "web2": ("task_failed", "non-zero return code", 2),
            "web3": (
                "unreachable",
                "Failed to connect to the host via ssh: Connection refused",
                None,
            ),
        }
        assert count(session, Event) == 7


def test_the_same_event_twice_is_stored_once(sessions: sessionmaker[Session]) -> None:
    events = failing_run_events(T0)
    store(sessions, events)

    again = store(sessions, [events[2], events[5]])

    assert (again.accepted, again.duplicates) == (0, 2)
    with sessions() as session:
        assert count(session, Event) == len(events)


def test_a_webhook_id_names_a_delivery(sessions: sessionmaker[Session]) -> None:
    first = store(sessions, event("runner_on_ok", T0, "web1", event_id="x1"), webhook_id="msg_1")
    # Different content under the same webhook id: the sender's retry of the same message.
    second = store(sessions, event("runner_on_ok", T0, "web2", event_id="x2"), webhook_id="msg_1")

    assert (first.accepted, second.duplicates) == (1, 1)


def test_a_single_run_never_goes_back(sessions: sessionmaker[Session]) -> None:
    """Within one run, a status of lower rank arriving late leaves the state as it was."""
    events = failing_run_events(T0)
    result = events[-1]
    store(sessions, [result])  # playbook_result FAILURE first
    store(sessions, events[:-1])  # then the earlier events, reordered by the network

    with sessions() as session:
        stored = execution(session)
        assert (stored.status, stored.run_index) == ("FAILURE", 0)
        run = session.scalars(select(ExecutionRun)).one()
        assert run.status == "FAILURE"


def test_a_later_run_wins_and_an_older_document_does_not_move_it_back(
    sessions: sessionmaker[Session],
) -> None:
    later = ExecutionDocument(
        EXECUTION_ID,
        JOB_ID,
        ACCOUNT,
        "RUNNING",
        (Timer(T0, T0 + 1000), Timer(T0 + 5000, None)),
        (),
        None,
        None,
        None,
    )
    older = ExecutionDocument(
        EXECUTION_ID,
        JOB_ID,
        ACCOUNT,
        "FAILURE",
        (Timer(T0, T0 + 1000),),
        ("web2",),
        None,
        None,
        None,
    )
    with transaction(sessions) as session:
        record_documents(session, [later], NOW)
    with transaction(sessions) as session:
        result = record_documents(session, [older], NOW)

    assert result.accepted == 1  # a different document, stored; it only may not win
    with sessions() as session:
        stored = execution(session)
        assert (stored.status, stored.run_index, stored.run_count) == ("RUNNING", 1, 2)


def test_advance_to_run_moves_forward_only(sessions: sessionmaker[Session]) -> None:
    store(sessions, failing_run_events(T0))
    with transaction(sessions) as session:
        advance_to_run(session, execution(session), 1, "PENDING", NOW)
    with transaction(sessions) as session:
        advance_to_run(session, execution(session), 0, "RUNNING", NOW)

    with sessions() as session:
        stored = execution(session)
        assert (stored.status, stored.run_index, stored.failed_hosts) == ("PENDING", 1, [])


def test_a_restart_answer_is_stored_applied_once_and_leaves_pending_deliveries_alone(
    sessions: sessionmaker[Session],
) -> None:
    store(sessions, failing_run_events(T0))
    answer = ExecutionDocument(
        EXECUTION_ID, JOB_ID, ACCOUNT, "PENDING", (Timer(T0, T0 + 1000),), ("web2",),
        None, None, None,
    )  # fmt: skip
    with transaction(sessions) as session:
        session.add(
            Event(
                execution_id=EXECUTION_ID,
                delivery_key="waiting",
                pending=True,
                kind="document",
                payload={},
            )
        )
    for _ in range(2):  # the second time, a duplicate: not stored, not applied
        with transaction(sessions) as session:
            record_answer(session, execution(session), answer, NOW)

    with sessions() as session:
        stored = execution(session)
        assert (stored.status, stored.run_index, stored.run_count) == ("PENDING", 1, 2)
        rows = session.execute(
            select(Event.delivery_key, Event.pending, Event.run_index).order_by(Event.id)
        ).all()
        assert [(pending, run) for _, pending, run in rows[-2:]] == [(True, None), (False, 1)]
        assert rows[-2].delivery_key == "waiting"
        assert count(session, Event) == len(failing_run_events(T0)) + 2


def test_ingest_and_decide_queues_one_restart_per_failed_run(
    sessions: sessionmaker[Session],
) -> None:
    deliveries = parse_deliveries(failing_run_events(T0), None, 500)
    with transaction(sessions) as session:
        first = ingest_and_decide(session, deliveries, NOW, POLICY, defer_unknown_jobs=False)
    with transaction(sessions) as session:
        again = ingest_and_decide(session, deliveries, NOW, POLICY, defer_unknown_jobs=False)

    assert (first.stored.accepted, first.decided.queued) == (7, 1)
    assert (again.stored.duplicates, again.decided.queued) == (7, 0)
    with sessions() as session:
        decision = session.scalars(select(Decision)).one()
        restart = session.scalars(select(Restart)).one()
        assert (decision.action, decision.rule, decision.policy_version) == (
            "restart",
            "defaults",
            POLICY.version_hash,
        )
        assert restart.state == RestartState.PENDING
        assert sorted(restart.hosts) == ["web2", "web3"]


def test_a_failure_of_an_unfetched_job_waits_when_rules_match_job_globs(
    sessions: sessionmaker[Session],
) -> None:
    deliveries = parse_deliveries(failing_run_events(T0), None, 500)
    with transaction(sessions) as session:
        result = ingest_and_decide(
            session, deliveries, NOW, JOB_GLOB_POLICY, defer_unknown_jobs=True
        )

    assert (result.decided.queued, result.decided.deferred) == (0, 1)
    with sessions() as session:
        assert count(session, Decision) == 0


def test_a_bad_item_rejects_the_whole_body() -> None:
    good = event("runner_on_ok", T0, "web1")
    with pytest.raises(Invalid) as raised:
        parse_deliveries([good, {"event_type": "runner_on_ok"}], None, 500)

    assert "1" in raised.value.fields


def test_too_many_items_are_refused() -> None:
    with pytest.raises(Invalid):
        parse_deliveries([event("runner_on_ok", T0 + n, "web1") for n in range(3)], None, 2)


def test_a_failure_added_in_a_batch_is_seen_when_the_batch_reads_its_failures_again(
    sessions: sessionmaker[Session],
) -> None:
    """web1's failure is added by the first event, a document then names web1 and web2 (web2
    inserted around the ORM, so the run's failures are read again), and a later event of
    the same batch details web1: the read must see the web1 row not yet flushed (it is, by
    flushing first), or web1 is inserted twice."""
    document = {
        "execution_id": EXECUTION_ID,
        "job_id": JOB_ID,
        "account_alias": ACCOUNT,
        "status": "FAILURE",
        "timers": [{"start": T0, "end": T0 + 5_000}],
        "failed_hosts": ["web1", "web2"],
    }
    batch = [
        event("runner_on_failed", T0 + 1_000, "web1", event_id="first", msg="timeout"),
        document,
        event("runner_on_failed", T0 + 2_000, "web1", event_id="again", msg="disk full"),
    ]

    store(sessions, batch)

    with sessions() as session:
        rows = session.execute(
            select(HostFailure.host, HostFailure.message).order_by(HostFailure.host)
        ).all()
    assert [tuple(row) for row in rows] == [("web1", "disk full"), ("web2", None)]


def test_a_failure_event_updates_its_execution_once(sessions: sessionmaker[Session]) -> None:
    """Reading the run's recorded failures does not flush the execution's pending changes
    early: its row is updated once per batch, not once before the read and once after."""
    store(sessions, event("playbook_on_start", T0))
    engine = sessions.kw["bind"]

    with counted_statements(engine) as statements:
        store(sessions, event("runner_on_failed", T0 + 1_000, "web1", msg="timeout"))

    updates = [s for s in statements if s.lstrip().upper().startswith("UPDATE EXECUTIONS ")]
    assert len(updates) == 1, updates
