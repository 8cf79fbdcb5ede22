"""Recording the feed, case by case: keys, documents, runs of late events (docs/runner.md).

These tests kill the mutants of app/core/ingest.py that the other ingest tests leave alive
(docs/TESTING.md): delivery keys that stay the same across releases (so a redelivery after an
upgrade is still a duplicate), what an execution document moves and stores, and which run a
late event belongs to.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from app.core.errors import Invalid
from app.core.ingest import (
    advance_to_run,
    delivery_key,
    document_deliveries,
    document_payload,
    ingest_and_decide,
    parse_deliveries,
    record_deliveries,
    record_documents,
)
from app.db import transaction
from app.models import Event, Execution, ExecutionRun, HostFailure, Restart
from app.policy import parse_policy
from app.runner.documents import ExecutionDocument, StatusEvent, Timer
from tests.feed import ACCOUNT, JOB_ID, event, failing_run_events

NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
T0 = int(NOW.timestamp() * 1000) - 3_600_000  # an hour before NOW
END = T0 + 1000  # the end of the first run in failing_run_events
EXEC = "exec-a"
RESTART = parse_policy("version: 1\ndefaults: {backoff: {initial: 0s}}\n", "test.yaml")
PLANTED = "-----BEGIN OPENSSH PRIVATE KEY-----\nPLANTEDKEY0123\n-----END OPENSSH PRIVATE KEY-----"


def at(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC)


def doc(
    status: str | None,
    timers: list[tuple[int | None, int | None]],
    failed: tuple[str, ...] = (),
    **extra: Any,
) -> ExecutionDocument:
    return ExecutionDocument(
        EXEC, JOB_ID, ACCOUNT, status, tuple(Timer(s, e) for s, e in timers), failed,
        extra.pop("repository_log", None), extra.pop("vpn", None), extra.pop("record_id", None),
        extra=extra,
    )  # fmt: skip


def documents(sessions: sessionmaker[Session], *docs: ExecutionDocument) -> None:
    for one in docs:
        with transaction(sessions) as session:
            record_documents(session, [one], NOW)


def events(sessions: sessionmaker[Session], *items: dict[str, Any]) -> None:
    with transaction(sessions) as session:
        record_deliveries(session, parse_deliveries(list(items), None, 500), NOW)


def ev(event_type: str, ts: int | None, host: str | None = None, **message: Any) -> dict[str, Any]:
    body = event(event_type, ts or 0, host, execution_id=EXEC, **message)
    body["id"] = f"{event_type}-{host}-{ts}"
    if ts is None:
        del body["timestamp"]
    return body


def state(session: Session) -> Execution:
    return session.scalars(select(Execution).where(Execution.execution_id == EXEC)).one()


def runs(session: Session) -> dict[int, ExecutionRun]:
    return {r.run_index: r for r in session.scalars(select(ExecutionRun))}


def stored_runs(sessions: sessionmaker[Session]) -> dict[str, int]:
    """The run each stored event was assigned to, by its event id."""
    with sessions() as session:
        return {
            e.event_id: e.run_index
            for e in session.scalars(select(Event).where(Event.kind == "event"))
            if e.event_id
        }


# --- delivery keys -----------------------------------------------------------------------------


def test_delivery_keys_stay_the_same_across_releases() -> None:
    """Keys are stored: a changed formula would take a redelivery for something new."""
    with_id = StatusEvent("ev-1", "exec-a", "job", "A", "runner_on_ok", 1000, {"host": "web1"})
    without_id = StatusEvent(None, "exec-a", "job", "A", "runner_on_ok", 1000, {"host": "web1"})
    document = ExecutionDocument(
        "exec-a", "job", "A", "FAILURE", (Timer(1000, 2000), Timer(3000, None)), ("web3", "web1"),
        None, None, "rec-1",
    )  # fmt: skip
    raw = {"b": [1, 2], "a": {"y": 1, "x": "é"}}

    assert delivery_key(with_id, None) == (
        "da98e6ea5b1608affe2bceaa290ade3971ceb9d4ad6535d2cb21a2dcbcb91e25"
    )
    assert delivery_key(without_id, raw) == (
        "3353da6d6934ba91df43862afcd676a83b2d7021224aaa413571194096b34d8d"
    )
    assert delivery_key(document, None) == (
        "feaddd9a9f68f3ee256d17c5cbcd9f152da270456fd9bf6de44867155a92bdc0"
    )


def test_an_event_without_an_id_is_known_by_its_body_in_any_key_order() -> None:
    item = StatusEvent(None, "exec-a", "job", "A", "runner_on_ok", 1000, {"host": "web1"})

    first = delivery_key(item, {"a": 1, "b": {"c": 2, "d": 3}})
    same = delivery_key(item, {"b": {"d": 3, "c": 2}, "a": 1})
    other = delivery_key(item, {"a": 1, "b": {"c": 2, "d": 4}})

    assert first == same != other


def test_a_document_is_known_by_what_it_says_not_by_its_record_id() -> None:
    one = doc("FAILURE", [(1, 2)], ("web1", "web2"), record_id="r1")
    same = doc("FAILURE", [(1, 2)], ("web2", "web1"), record_id="r2")

    assert delivery_key(one, None) == delivery_key(same, None)
    assert delivery_key(one, None) != delivery_key(doc("FAILURE", [(1, 3)], ("web1",)), None)
    assert delivery_key(one, None) != delivery_key(doc("SUCCESS", [(1, 2)], ("web1",)), None)


# --- fetched documents ---------------------------------------------------------------------------


def test_a_fetched_document_is_stored_as_the_runner_would_have_sent_it() -> None:
    document = ExecutionDocument(
        EXEC, JOB_ID, ACCOUNT, "FAILURE", (Timer(1, 2), Timer(3, None)), ("web1",), "log", True,
        "rec-1", extra={"status": "stale", "extra_field": 1},
    )  # fmt: skip

    assert document_payload(document) == {
        "extra_field": 1,
        "execution_id": EXEC,
        "job_id": JOB_ID,
        "account_alias": ACCOUNT,
        "status": "FAILURE",
        "timers": [{"start": 1, "end": 2}, {"start": 3, "end": None}],
        "failed_hosts": ["web1"],
        "repository_log": "log",
        "is_vpn_established": True,
        "id": "rec-1",
    }
    assert "id" not in document_payload(doc("FAILURE", [(1, 2)]))


def test_a_documents_record_id_and_status_are_kept_on_its_event(
    sessions: sessionmaker[Session],
) -> None:
    documents(sessions, doc("FAILURE", [(T0, END)], ("web2",), record_id="rec-9"))

    with sessions() as session:
        (stored,) = session.scalars(select(Event))
        assert (stored.kind, stored.status, stored.event_id, stored.run_index) == (
            "document",
            "FAILURE",
            "rec-9",
            0,
        )
        assert (stored.received_at, stored.payload["id"]) == (NOW, "rec-9")


# --- what a document moves -----------------------------------------------------------------------


def test_a_failed_document_records_its_run_its_hosts_and_when_it_failed(
    sessions: sessionmaker[Session],
) -> None:
    documents(sessions, doc("FAILURE", [(T0, END)], ("web2", "web3"), vpn=False))

    with sessions() as session:
        execution = state(session)
        assert (execution.status, execution.run_index, execution.run_count) == ("FAILURE", 0, 1)
        assert execution.failed_hosts == ["web2", "web3"]
        assert execution.first_failure_at == at(END)  # the run's end, not when it was fetched
        assert execution.is_vpn_established is False
        run = runs(session)[0]
        assert (run.status, run.start_ms, run.end_ms) == ("FAILURE", T0, END)
        assert (run.started_at, run.ended_at) == (at(T0), at(END))
        assert (run.start_derived, run.end_derived) == (False, False)
        failures = session.scalars(select(HostFailure).order_by(HostFailure.host)).all()
        assert [(f.host, f.failure_class, f.run_index, f.occurred_at) for f in failures] == [
            ("web2", "unknown", 0, NOW),
            ("web3", "unknown", 0, NOW),
        ]


def test_an_init_failure_names_its_hosts_init_failures(sessions: sessionmaker[Session]) -> None:
    documents(sessions, doc("INIT_FAILURE", [(T0, END)], ("web2",)))

    with sessions() as session:
        (failure,) = session.scalars(select(HostFailure))
        assert failure.failure_class == "init_failure"


def test_a_failure_still_running_is_dated_when_it_is_seen(
    sessions: sessionmaker[Session],
) -> None:
    documents(sessions, doc("FAILURE", [(T0, None)], ("web2",)))

    with sessions() as session:
        assert state(session).first_failure_at == NOW


def test_a_failure_dated_in_the_future_is_dated_now_at_the_latest(
    sessions: sessionmaker[Session],
) -> None:
    future = int((dt.datetime.now(dt.UTC) + dt.timedelta(days=365)).timestamp() * 1000)

    documents(sessions, doc("FAILURE", [(T0, future)], ("web2",)))

    with sessions() as session:
        first_failure_at = state(session).first_failure_at
        assert first_failure_at is not None
        assert first_failure_at <= dt.datetime.now(dt.UTC)


def test_the_first_failure_is_kept_when_a_later_run_fails(sessions: sessionmaker[Session]) -> None:
    documents(
        sessions,
        doc("FAILURE", [(T0, END)], ("web2",)),
        doc("FAILURE", [(T0, END), (END + 5000, END + 6000)], ("web2",)),
    )

    with sessions() as session:
        execution = state(session)
        assert (execution.run_index, execution.first_failure_at) == (1, at(END))


def test_a_restarts_answer_opens_the_next_run_and_names_the_hosts_of_the_one_before(
    sessions: sessionmaker[Session],
) -> None:
    """PENDING with only the earlier, ended timers: the restart's run has no timer yet."""
    documents(sessions, doc("PENDING", [(T0, END)], ("web2",)))

    with sessions() as session:
        execution = state(session)
        assert (execution.status, execution.run_index, execution.run_count) == ("PENDING", 1, 2)
        assert execution.failed_hosts == []
        assert runs(session)[0].status == "FAILURE"  # only a failed run is restarted
        assert runs(session)[1].status == "PENDING"
        (failure,) = session.scalars(select(HostFailure))
        assert (failure.host, failure.run_index, failure.failure_class) == ("web2", 0, "unknown")
        assert failure.occurred_at == NOW


def test_an_initializing_run_with_its_timer_open_is_the_current_run(
    sessions: sessionmaker[Session],
) -> None:
    documents(sessions, doc("INITIALIZING", [(T0, END), (END + 5000, None)], ("web2",)))

    with sessions() as session:
        execution = state(session)
        assert (execution.status, execution.run_index, execution.run_count) == (
            "INITIALIZING",
            1,
            2,
        )
        (failure,) = session.scalars(select(HostFailure))
        assert failure.run_index == 0


def test_a_pending_execution_without_timers_is_in_its_first_run(
    sessions: sessionmaker[Session],
) -> None:
    documents(sessions, doc("PENDING", [], ("web2",)))

    with sessions() as session:
        execution = state(session)
        assert (execution.status, execution.run_index, execution.run_count) == ("PENDING", 0, 1)
        assert session.scalars(select(HostFailure)).all() == []


def test_an_earlier_run_that_ended_successfully_keeps_its_status(
    sessions: sessionmaker[Session],
) -> None:
    documents(
        sessions,
        doc("SUCCESS", [(T0, END)]),
        doc("RUNNING", [(T0, END), (END + 5000, None)]),
    )

    with sessions() as session:
        assert [r.status for _, r in sorted(runs(session).items())] == ["SUCCESS", "RUNNING"]


def test_a_document_without_a_status_stores_its_timers_and_moves_nothing(
    sessions: sessionmaker[Session],
) -> None:
    documents(sessions, doc(None, [(T0, END)]))

    with sessions() as session:
        execution = state(session)
        assert (execution.status, execution.status_rank) == ("PENDING", -1)
        assert (runs(session)[0].start_ms, runs(session)[0].end_ms) == (T0, END)


def test_a_timer_without_a_start_leaves_the_known_start(sessions: sessionmaker[Session]) -> None:
    documents(sessions, doc("RUNNING", [(T0, None)]), doc("FAILURE", [(None, END)], ("web2",)))

    with sessions() as session:
        run = runs(session)[0]
        assert (run.start_ms, run.end_ms) == (T0, END)


def test_the_repository_log_is_stored_redacted(sessions: sessionmaker[Session]) -> None:
    log = {"lines": [f"cloning with {PLANTED}"], "password": "pw-PLANTED"}

    documents(sessions, doc("FAILURE", [(T0, END)], ("web2",), repository_log=log, vpn=True))

    with sessions() as session:
        execution = state(session)
        stored = json.dumps(execution.repository_log)
        assert "PLANTEDKEY0123" not in stored and "pw-PLANTED" not in stored
        assert execution.repository_log["password"] == "[redacted]"
        assert execution.is_vpn_established is True


def restart_of_run_0(sessions: sessionmaker[Session], **values: Any) -> None:
    """Run 0 failed and was decided; its restart is set to `values` (sent: state done)."""
    first = doc("FAILURE", [(T0, END)], ("web2",))
    with transaction(sessions) as session:
        ingest_and_decide(session, document_deliveries([first]), NOW, RESTART, False)
        session.execute(update(Restart).values(**values))


def restart_results(sessions: sessionmaker[Session]) -> list[tuple[str | None, Any]]:
    with sessions() as session:
        rows = session.scalars(select(Restart).order_by(Restart.id))
        return [(r.result, r.result_at) for r in rows]


def second_run(status: str, runs_: int = 2) -> ExecutionDocument:
    timers = [(T0, END), (END + 5000, END + 6000), (END + 8000, END + 9000)][:runs_]
    return doc(status, timers, ("web2",) if status == "FAILURE" else ())


def test_the_run_that_a_restart_started_reports_how_it_ended(
    sessions: sessionmaker[Session],
) -> None:
    """The breaker's input: the restart of run 0 is settled by how run 1 ends."""
    restart_of_run_0(sessions, state="done")

    documents(sessions, second_run("FAILURE"))

    assert restart_results(sessions) == [("failed_again", at(END + 6000))]


def test_a_restart_whose_run_succeeded_is_recorded_as_such(
    sessions: sessionmaker[Session],
) -> None:
    restart_of_run_0(sessions, state="done")

    documents(sessions, second_run("SUCCESS"))

    assert restart_results(sessions) == [("succeeded", at(END + 6000))]


def test_a_runs_end_settles_only_its_own_executions_restart(
    sessions: sessionmaker[Session],
) -> None:
    restart_of_run_0(sessions, state="done")
    other = dataclasses.replace(doc("FAILURE", [(T0, END)], ("web2",)), execution_id="exec-b")
    with transaction(sessions) as session:
        ingest_and_decide(session, document_deliveries([other]), NOW, RESTART, False)
        session.execute(update(Restart).values(state="done"))

    documents(sessions, second_run("SUCCESS"))

    assert restart_results(sessions) == [("succeeded", at(END + 6000)), (None, None)]


def test_a_runs_end_settles_only_the_restart_of_the_run_before_it(
    sessions: sessionmaker[Session],
) -> None:
    restart_of_run_0(sessions, state="done")

    documents(sessions, second_run("SUCCESS", runs_=3))  # run 2 ends; run 1 was never seen

    assert restart_results(sessions) == [(None, None)]


def test_an_unsent_restart_is_not_settled_by_the_next_run(sessions: sessionmaker[Session]) -> None:
    restart_of_run_0(sessions, state="failed")

    documents(sessions, second_run("SUCCESS"))

    assert restart_results(sessions) == [(None, None)]


def test_a_restarts_recorded_result_is_kept(sessions: sessionmaker[Session]) -> None:
    restart_of_run_0(sessions, state="done", result="succeeded", result_at=NOW)

    documents(sessions, second_run("FAILURE"))

    assert restart_results(sessions) == [("succeeded", NOW)]


def test_an_initializing_restart_without_its_own_timer_is_the_next_run(
    sessions: sessionmaker[Session],
) -> None:
    documents(sessions, doc("INITIALIZING", [(T0, END)], ("web2",)))

    with sessions() as session:
        assert (state(session).status, state(session).run_index) == ("INITIALIZING", 1)


# --- which run a late event belongs to -----------------------------------------------------------


def restarted(sessions: sessionmaker[Session], with_result: bool = False) -> None:
    """Run 0 failed (its events, with or without the closing result) and was restarted."""
    feed = failing_run_events(T0, ("web2",), prefix="r0", execution_id=EXEC)
    closing = [e for e in feed if e["event_type"] in ("playbook_on_stats", "playbook_result")]
    events(sessions, *(feed if with_result else [e for e in feed if e not in closing]))
    documents(sessions, doc("PENDING", [(T0, END)], ("web2",)))


def test_a_late_closing_event_belongs_to_the_run_it_closes(
    sessions: sessionmaker[Session],
) -> None:
    restarted(sessions)

    events(sessions, ev("playbook_result", END + 500, status="FAILURE"))

    assert stored_runs(sessions)["playbook_result-None-" + str(END + 500)] == 0
    with sessions() as session:
        execution = state(session)
        assert (execution.run_index, execution.status) == (1, "PENDING")


def test_a_closing_event_of_a_run_that_has_its_result_belongs_to_the_next(
    sessions: sessionmaker[Session],
) -> None:
    restarted(sessions, with_result=True)

    events(sessions, ev("playbook_result", END + 500, status="SUCCESS"))

    assert stored_runs(sessions)["playbook_result-None-" + str(END + 500)] == 1
    with sessions() as session:
        assert state(session).status == "SUCCESS"


def test_a_closing_event_long_after_the_end_belongs_to_the_next_run(
    sessions: sessionmaker[Session],
) -> None:
    restarted(sessions)

    events(sessions, ev("playbook_result", END + 10_001, status="SUCCESS"))

    assert stored_runs(sessions)["playbook_result-None-" + str(END + 10_001)] == 1


def test_a_late_event_from_inside_an_earlier_run_stays_in_that_run(
    sessions: sessionmaker[Session],
) -> None:
    restarted(sessions)

    events(sessions, ev("runner_on_failed", END - 100, "web4", msg="late"))

    assert stored_runs(sessions)["runner_on_failed-web4-" + str(END - 100)] == 0
    with sessions() as session:
        execution = state(session)
        assert (execution.run_index, execution.status, execution.failed_hosts) == (1, "PENDING", [])
        hosts = {(f.host, f.run_index) for f in session.scalars(select(HostFailure))}
        assert ("web4", 0) in hosts


def test_an_event_after_the_end_that_closes_nothing_belongs_to_the_next_run(
    sessions: sessionmaker[Session],
) -> None:
    restarted(sessions)

    events(sessions, ev("runner_on_ok", END + 500, "web1"))

    assert stored_runs(sessions)["runner_on_ok-web1-" + str(END + 500)] == 1
    with sessions() as session:
        assert (state(session).run_index, state(session).status) == (1, "RUNNING")


def test_an_event_after_the_next_run_started_belongs_to_it(
    sessions: sessionmaker[Session],
) -> None:
    restarted(sessions)
    documents(sessions, doc("RUNNING", [(T0, END), (END + 200, None)]))

    events(sessions, ev("playbook_result", END + 500, status="SUCCESS"))

    assert stored_runs(sessions)["playbook_result-None-" + str(END + 500)] == 1


def ended_without_restart(sessions: sessionmaker[Session], with_result: bool) -> None:
    feed = failing_run_events(T0, ("web2",), prefix="e0", execution_id=EXEC)
    if not with_result:
        feed = [e for e in feed if e["event_type"] != "playbook_result"]
    events(sessions, *feed)
    documents(sessions, doc("FAILURE", [(T0, END)], ("web2",)))


def test_after_a_run_ended_a_new_start_opens_the_next_run(sessions: sessionmaker[Session]) -> None:
    ended_without_restart(sessions, with_result=True)

    events(sessions, ev("playbook_on_start", END + 5000))

    assert stored_runs(sessions)["playbook_on_start-None-" + str(END + 5000)] == 1


def test_after_a_run_ended_its_own_late_result_still_closes_it(
    sessions: sessionmaker[Session],
) -> None:
    ended_without_restart(sessions, with_result=False)

    events(sessions, ev("playbook_result", END + 500, status="FAILURE"))

    assert stored_runs(sessions)["playbook_result-None-" + str(END + 500)] == 0
    with sessions() as session:
        assert state(session).run_index == 0


def test_an_event_in_a_run_still_going_stays_in_it(sessions: sessionmaker[Session]) -> None:
    documents(sessions, doc("RUNNING", [(T0, END)]))  # an end, but not final yet

    events(sessions, ev("runner_on_ok", END + 500, "web1"))

    assert stored_runs(sessions)["runner_on_ok-web1-" + str(END + 500)] == 0


def test_an_undated_start_after_a_final_status_opens_the_next_run(
    sessions: sessionmaker[Session],
) -> None:
    ended_without_restart(sessions, with_result=True)

    events(sessions, ev("playbook_on_start", None), ev("runner_on_ok", None, "web9"))

    runs_of = stored_runs(sessions)
    assert runs_of["playbook_on_start-None-None"] == 1
    assert runs_of["runner_on_ok-web9-None"] == 1


def test_an_undated_event_of_a_running_execution_stays_in_its_run(
    sessions: sessionmaker[Session],
) -> None:
    documents(sessions, doc("RUNNING", [(T0, None)]))

    events(sessions, ev("playbook_on_start", None))

    assert stored_runs(sessions)["playbook_on_start-None-None"] == 0


def test_a_run_dated_by_its_events_is_redated_by_an_earlier_event(
    sessions: sessionmaker[Session],
) -> None:
    events(sessions, ev("runner_on_ok", T0 + 500, "web1"))
    events(sessions, ev("playbook_on_start", T0 + 100))

    with sessions() as session:
        run = runs(session)[0]
        assert (run.start_ms, run.started_at, run.start_derived) == (T0 + 100, at(T0 + 100), True)
        assert state(session).last_event_at == at(T0 + 500)


def test_a_failure_marked_ignore_errors_names_no_failed_host(
    sessions: sessionmaker[Session],
) -> None:
    events(sessions, ev("runner_on_failed", T0 + 500, "web1", ignore_errors=True))

    with sessions() as session:
        assert session.scalars(select(HostFailure)).all() == []
        assert state(session).status == "RUNNING"


def test_an_unknown_failure_class_is_named_by_a_later_event(
    sessions: sessionmaker[Session],
) -> None:
    documents(sessions, doc("RUNNING", [(T0, None)]))
    with transaction(sessions) as session:
        session.execute(update(Execution).values(status_rank=2))
    events(sessions, ev("runner_on_unreachable", T0 + 500, "web3", msg="no route"))
    documents(sessions, doc("FAILURE", [(T0, END)], ("web3",)))

    with sessions() as session:
        (failure,) = session.scalars(select(HostFailure))
        assert (failure.failure_class, failure.message) == ("unreachable", "no route")


def test_a_closing_event_is_matched_to_its_own_runs_result_only(
    sessions: sessionmaker[Session],
) -> None:
    """Another run's or another execution's stored result does not close this run."""
    other = failing_run_events(T0, ("web2",), prefix="o0", execution_id="exec-other")
    events(sessions, *other)  # exec-other has its run 0 result
    restarted(sessions)  # exec-a's run 0 has none
    events(sessions, ev("playbook_result", END + 20_000, status="SUCCESS"))  # run 1's result

    events(sessions, ev("playbook_on_stats", END + 600))

    runs_of = stored_runs(sessions)
    assert runs_of["playbook_result-None-" + str(END + 20_000)] == 1
    assert runs_of["playbook_on_stats-None-" + str(END + 600)] == 0


def test_advancing_to_a_failed_run_dates_the_failure(sessions: sessionmaker[Session]) -> None:
    documents(sessions, doc("RUNNING", [(T0, None)]))

    with transaction(sessions) as session:
        advance_to_run(session, state(session), 1, "FAILURE", NOW)

    with sessions() as session:
        execution = state(session)
        assert (execution.run_index, execution.status, execution.first_failure_at) == (
            1,
            "FAILURE",
            NOW,
        )


def test_a_closing_event_at_the_very_end_of_the_grace_still_closes_its_run(
    sessions: sessionmaker[Session],
) -> None:
    restarted(sessions)

    events(sessions, ev("playbook_result", END + 10_000, status="FAILURE"))

    assert stored_runs(sessions)["playbook_result-None-" + str(END + 10_000)] == 0


def test_a_result_naming_a_hosts_single_failure_records_it(
    sessions: sessionmaker[Session],
) -> None:
    stats = {
        "web1": {"ok": 3, "failures": 0, "unreachable": 0},
        "web2": {"ok": 1, "failures": 1, "unreachable": 0},
        "web3": {"ok": 0, "failures": 0, "unreachable": 1},
        "web4": {"ok": 0, "failures": True, "unreachable": False},
    }

    events(sessions, ev("playbook_result", T0 + 900, status="FAILURE", stats=stats))

    with sessions() as session:
        failures = session.scalars(select(HostFailure).order_by(HostFailure.host))
        assert [(f.host, f.failure_class) for f in failures] == [
            ("web2", "task_failed"),
            ("web3", "unreachable"),
        ]


def test_a_result_without_a_message_is_a_failure(sessions: sessionmaker[Session]) -> None:
    result = ev("playbook_result", T0 + 900)
    result["message"] = None

    events(sessions, result)

    with sessions() as session:
        assert state(session).status == "FAILURE"


# --- parsing a body ------------------------------------------------------------------------------


def test_a_delivery_carries_its_body_redacted_and_its_keys() -> None:
    body = ev("runner_on_ok", T0, "web1", password="pw-PLANTED")

    (one,) = parse_deliveries(body, "msg-1", 10)
    (listed,) = parse_deliveries([body], None, 10)

    assert one.payload == {**body, "message": {"host": "web1", "password": "[redacted]"}}
    assert one.webhook_key == hashlib.sha256(b"webhook\x1fmsg-1\x1f0").hexdigest()
    assert (listed.webhook_key, listed.delivery_key) == (None, one.delivery_key)


def test_an_empty_array_is_refused() -> None:
    with pytest.raises(Invalid) as refused:
        parse_deliveries([], None, 10)

    assert str(refused.value) == "empty array: nothing to record"
    assert refused.value.fields == {"_schema": ["Empty array."]}


def test_more_items_than_allowed_are_refused() -> None:
    body = [ev("runner_on_ok", T0 + n, "web1") for n in range(3)]

    assert len(parse_deliveries(body, None, 3)) == 3
    with pytest.raises(Invalid) as refused:
        parse_deliveries(body, None, 2)

    assert str(refused.value) == "too many items in one delivery (3 > 2)"
    assert refused.value.fields == {"_schema": ["At most 2 items per delivery."]}


def test_bad_items_are_named_by_their_place_in_the_array() -> None:
    good = ev("runner_on_ok", T0, "web1")
    bad = {**good, "timestamp": "yesterday"}

    with pytest.raises(Invalid) as refused:
        parse_deliveries([good, bad, bad], None, 10)

    assert str(refused.value) == (
        "the payload does not have the shape of a status event or execution"
    )
    assert set(refused.value.fields) == {"1", "2"}
    assert refused.value.fields["1"] and refused.value.fields["1"] == refused.value.fields["2"]


def test_a_single_bad_item_is_described_by_its_own_fields() -> None:
    bad = {**ev("runner_on_ok", T0, "web1"), "timestamp": "yesterday"}

    with pytest.raises(Invalid) as refused:
        parse_deliveries(bad, None, 10)

    assert "timestamp" in refused.value.fields


@pytest.mark.parametrize(
    ("stats", "status"),
    [
        ({"web1": {"ok": 3, "failures": 0, "unreachable": 0}}, "SUCCESS"),
        ({"web1": {"ok": 3}, "web2": {"failures": 1}}, "FAILURE"),
        ({"web1": {"unreachable": 2}}, "FAILURE"),
        ({"web1": {"failures": "1", "unreachable": None}}, "SUCCESS"),
        ({"web1": 5, "web2": {"failures": 0}}, "SUCCESS"),
    ],
)
def test_a_result_without_a_status_is_judged_by_its_host_counts(
    sessions: sessionmaker[Session], stats: dict[str, Any], status: str
) -> None:
    events(sessions, ev("playbook_result", T0 + 900, stats=stats))

    with sessions() as session:
        assert state(session).status == status


@pytest.mark.parametrize(("said", "status"), [(" success ", "SUCCESS"), ("Failure", "FAILURE")])
def test_a_results_own_status_is_read_in_any_case(
    sessions: sessionmaker[Session], said: str, status: str
) -> None:
    stats = {"web1": {"failures": 1}}

    events(sessions, ev("playbook_result", T0 + 900, status=said, stats=stats))

    with sessions() as session:
        assert state(session).status == status
