"""The intake as the receiver uses it: answered once durable, applied right after, and
nothing lost or applied twice when a batch fails, a process dies or the database is away."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from app.core import inbox as inbox_module
from app.core import runs as runs_module
from app.core.deliveries import parse_deliveries
from app.core.inbox import MAX_ATTEMPTS, store
from app.db import utcnow
from app.extensions import get_runtime
from app.intake import intake as intake_module
from app.intake.tickets import Backlog, Ticket
from app.models import Decision, Event, Execution, HostFailure
from tests.conftest import CALLBACK_TOKEN
from tests.feed import event, failing_run_events
from tests.helpers import transaction

URL = f"/callbacks/{CALLBACK_TOKEN}"
T0 = int(time.time() * 1000) - 60_000


@pytest.fixture
def durable(make_app: Callable[..., Flask]) -> Flask:
    """An app that answers callbacks as soon as they are stored (the default)."""
    return make_app(callback_ack="durable")


def post(client: FlaskClient, body: Any) -> dict[str, Any]:
    response = client.post(URL, data=json.dumps(body), content_type="application/json")
    assert response.status_code == 202, response.get_json()
    answer: dict[str, Any] = response.get_json()
    return answer


def eventually(check: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def counts(app: Flask) -> dict[str, int]:
    with transaction(app) as session:
        return {
            "events": session.scalar(select(func.count()).select_from(Event)) or 0,
            "pending": session.scalar(
                select(func.count()).select_from(Event).where(Event.pending.is_(True))
            )
            or 0,
            "decisions": session.scalar(select(func.count()).select_from(Decision)) or 0,
        }


def test_a_durable_answer_is_followed_by_the_decision(
    durable: Flask, api_headers: dict[str, str]
) -> None:
    client = durable.test_client()

    answer = post(client, failing_run_events(T0, execution_id="exec-durable"))

    assert answer == {"accepted": 7, "duplicates": 0}
    decided = eventually(
        lambda: (
            client.get("/api/v1/executions/exec-durable", headers=api_headers)
            .get_json()
            .get("decisions")
        ),
        "the decision",
    )
    assert decided[0]["action"] == "restart"
    assert counts(durable)["pending"] == 0


def test_duplicates_are_counted_exactly_on_a_durable_answer(durable: Flask) -> None:
    client = durable.test_client()
    events = failing_run_events(T0, execution_id="exec-dup")
    post(client, events[:4])

    assert post(client, events) == {"accepted": 3, "duplicates": 4}
    assert post(client, [events[0], events[0]]) == {"accepted": 0, "duplicates": 2}
    eventually(lambda: counts(durable)["pending"] == 0, "the inbox to drain")
    assert counts(durable)["events"] == 7


def test_pending_deliveries_are_applied_in_the_order_they_were_stored(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = failing_run_events(T0, execution_id="exec-order")
    reordered = [events[6], events[0], events[3], events[1], events[5], events[2], events[4]]
    with transaction(app) as session:
        for item in reordered:  # stored one by one, in this order
            store(session, parse_deliveries(item, None, 500), utcnow())
    seen: list[str] = []
    real_apply = inbox_module.apply_item

    def spy(session: Any, state: Any, item: Any, received_at: Any) -> int:
        seen.append(item.event_id)
        return real_apply(session, state, item, received_at)

    monkeypatch.setattr(inbox_module, "apply_item", spy)
    policy = get_runtime(app).current_policy().policy
    with transaction(app) as session:
        processed = inbox_module.process(
            session, {"exec-order"}, utcnow(), policy, defer_unknown_jobs=False
        )

    assert seen == [item["id"] for item in reordered]
    assert processed.applied == 7 and processed.decided.queued == 1
    with transaction(app) as session:
        execution = session.scalars(select(Execution)).one()
        assert (execution.status, sorted(execution.failed_hosts)) == ("FAILURE", ["web2", "web3"])


def test_deliveries_left_pending_by_a_dead_process_are_applied_by_the_sweep(
    durable: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Stored by a process that died before applying them:
    with transaction(durable) as session:
        store(session, parse_deliveries(failing_run_events(T0, execution_id="exec-orphan"),
                                        None, 500), utcnow())  # fmt: skip
    monkeypatch.setattr(intake_module, "SWEEP_SECONDS", 0.05)
    monkeypatch.setattr(intake_module, "LEFTOVER_AGE", intake_module.dt.timedelta(0))

    post(durable.test_client(), event("runner_on_ok", T0, "web1", execution_id="exec-other"))

    eventually(lambda: counts(durable) == {"events": 8, "pending": 0, "decisions": 1}, "the sweep")


def test_a_delivery_that_cannot_be_applied_holds_up_no_other(
    durable: Flask, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real_apply = runs_module.apply_event

    def apply_event(session: Any, state: Any, item: Any, now: Any) -> int:
        if item.execution_id == "exec-poison":
            raise ValueError("a bug in applying this one")
        return real_apply(session, state, item, now)

    monkeypatch.setattr(inbox_module, "apply_event", apply_event)
    monkeypatch.setattr(intake_module, "SWEEP_SECONDS", 0.02)
    monkeypatch.setattr(intake_module, "LEFTOVER_AGE", intake_module.dt.timedelta(0))
    client = durable.test_client()

    post(client, [
        event("runner_on_ok", T0, "web1", execution_id="exec-poison"),
        *failing_run_events(T0, execution_id="exec-healthy"),
    ])  # fmt: skip

    eventually(lambda: counts(durable)["decisions"] == 1, "the healthy execution's decision")

    def attempts() -> int:
        with transaction(durable) as session:
            return (
                session.scalar(select(Event.attempts).where(Event.execution_id == "exec-poison"))
                or 0
            )

    # The sweep retries it until it is left aside, counted as stuck on /readyz.
    eventually(lambda: attempts() >= MAX_ATTEMPTS, "the poisoned delivery to be left aside")
    assert counts(durable)["pending"] == 1
    intake = client.get("/readyz").get_json()["checks"]["intake"]
    assert intake == {"spooled": 0, "pending": 1, "stuck": 1}
    assert "applying the deliveries of exec-poison failed" in caplog.text


def test_the_readiness_check_and_metrics_show_the_spool(
    durable: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    def store_fails(*_args: Any, **_kwargs: Any) -> Any:
        raise intake_module.OperationalError("INSERT", {}, Exception("database is locked"))

    monkeypatch.setattr(intake_module, "store", store_fails)
    client = durable.test_client()

    assert post(client, [event("runner_on_ok", T0, "web1"), event("runner_on_ok", T0, "web2")]) == {
        "accepted": 2,
        "duplicates": 0,
    }

    assert client.get("/readyz").get_json()["checks"]["intake"]["spooled"] == 2
    scrape = client.get("/metrics").get_data(as_text=True)
    assert "respawn_spool_depth 2.0" in scrape
    assert "respawn_events_spooled_total" in scrape


def test_the_writer_and_processor_outlive_a_failing_batch(
    durable: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_store = intake_module.store
    calls = {"n": 0}

    def flaky_store(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("a bug in this one batch")
        return real_store(*args, **kwargs)

    monkeypatch.setattr(intake_module, "store", flaky_store)
    client = durable.test_client()

    first = client.post(URL, json=event("runner_on_ok", T0, "web1", execution_id="exec-a"))
    second = client.post(URL, json=event("runner_on_ok", T0, "web1", execution_id="exec-b"))

    assert first.status_code == 503  # not stored: the sender is told so
    assert second.status_code == 202  # the writer is still there
    eventually(lambda: counts(durable) == {"events": 1, "pending": 0, "decisions": 0}, "exec-b")


def test_batches_are_small_on_sqlite_and_take_all_that_waits_on_postgres(
    durable: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite has one writer: while a batch is applied, every callback waits for its 202
    behind it, so a batch is kept small; PostgreSQL applies what waits at once. (On SQLite
    the writer applies what it stores; on PostgreSQL the processor does.)"""
    entered = threading.Event()
    released = threading.Event()
    applied: list[int] = []
    real = intake_module.process

    def held(*args: Any, **kwargs: Any) -> Any:
        entered.set()
        released.wait(20)  # the first batch is held while callbacks pile up behind it
        result = real(*args, **kwargs)
        applied.append(result.applied)
        return result

    monkeypatch.setattr(intake_module, "process", held)
    bodies = [
        [
            item
            for k in range(7)
            for item in failing_run_events(T0, ("web1",), f"b{n}-{k}-", f"exec-batch-{n}-{k}")
        ]
        for n in range(12)
    ]
    accepted: list[int] = []

    def send(body: list[dict[str, Any]]) -> None:
        accepted.append(post(durable.test_client(), body)["accepted"])

    senders = [threading.Thread(target=send, args=(body,)) for body in bodies]
    senders[0].start()
    eventually(entered.is_set, "the first batch is held")
    for sender in senders[1:]:
        sender.start()
    intake = get_runtime(durable).intake
    sqlite = get_runtime(durable).engine.dialect.name == "sqlite"
    waiting = intake._incoming if sqlite else intake._stored
    eventually(lambda: waiting.qsize() == len(bodies) - 1, "the others wait")
    released.set()
    for sender in senders:
        sender.join(30)
    total = sum(len(body) for body in bodies)
    eventually(lambda: sum(applied) == total, "every delivery applied")

    assert sorted(accepted) == sorted(len(body) for body in bodies)
    # The held first batch, then what piled up meanwhile (tickets are taken whole: a batch
    # stops at the first ticket that reaches the limit).
    assert applied[0] == len(bodies[0])
    if sqlite:
        assert max(applied) < 200 + len(bodies[0])
        assert len(applied) >= 3
    else:
        assert applied == [len(bodies[0]), total - len(bodies[0])]


def test_each_applied_delivery_records_its_execution_and_run(durable: Flask) -> None:
    """Applying a batch clears `pending` and records each delivery's execution and run (on
    PostgreSQL one statement for the whole batch), as the run pages read them."""
    first = failing_run_events(T0, ("web2",), "r0-", "exec-two-runs")
    second = failing_run_events(T0 + 600_000, ("web3",), "r1-", "exec-two-runs")
    other = failing_run_events(T0, ("web1",), "o-", "exec-other")

    post(durable.test_client(), first + second + other)

    def recorded() -> list[tuple[str, int | None, int | None, bool]]:
        with transaction(durable) as session:
            pks = dict(session.execute(select(Execution.execution_id, Execution.id)).all())
            rows = session.execute(
                select(Event.event_id, Event.execution_pk, Event.run_index, Event.pending)
            ).all()
        by_pk = {pk: execution_id for execution_id, pk in pks.items()}
        return [(r.event_id, by_pk.get(r.execution_pk), r.run_index, r.pending) for r in rows]

    eventually(lambda: not any(pending for *_, pending in recorded()), "every delivery applied")
    expected = (
        [(e["id"], "exec-two-runs", 0, False) for e in first]
        + [(e["id"], "exec-two-runs", 1, False) for e in second]
        + [(e["id"], "exec-other", 0, False) for e in other]
    )
    assert sorted(recorded()) == sorted(expected)


def test_a_documents_failed_hosts_are_recorded_once_and_detailed_by_later_events(
    durable: Flask,
) -> None:
    """A document's failed hosts are inserted together (not one object each); a host named
    twice is one row, and an event of the same batch that details a host updates its row."""
    document = {
        "execution_id": "exec-doc-hosts",
        "job_id": "job-doc-hosts",
        "account_alias": "XXXX",
        "status": "FAILURE",
        "timers": [{"start": T0, "end": T0 + 5_000}],
        "failed_hosts": ["web1", "web2", "web1"],
    }
    detail = event(
        "runner_on_failed",
        T0 + 1_000,
        "web2",
        execution_id="exec-doc-hosts",
        event_id="doc-hosts-detail",
        msg="disk full",
    )

    post(durable.test_client(), [document, detail])

    def rows() -> list[tuple[str, str, str | None]]:
        with transaction(durable) as session:
            found = session.execute(
                select(HostFailure.host, HostFailure.failure_class, HostFailure.message)
                .join(Execution, Execution.id == HostFailure.execution_pk)
                .where(Execution.execution_id == "exec-doc-hosts")
                .order_by(HostFailure.host)
            ).all()
        return [tuple(row) for row in found]

    eventually(lambda: counts(durable)["pending"] == 0 and rows(), "the batch applied")
    assert rows() == [("web1", "unknown", None), ("web2", "task_failed", "disk full")]


def _held_processor(
    monkeypatch: pytest.MonkeyPatch, app: Flask
) -> tuple[threading.Event, threading.Event]:
    """The processor applying beside the writer (as on PostgreSQL, also on SQLite here), and
    held before its first batch's transaction until released; (entered, released)."""
    intake = get_runtime(app).intake
    intake._apply_on_store = False
    entered = threading.Event()
    released = threading.Event()
    real = intake._process

    def held(tickets: list[Ticket]) -> bool:
        entered.set()
        released.wait(20)
        return real(tickets)

    monkeypatch.setattr(intake, "_process", held)
    return entered, released


def _post_in_background(app: Flask, body: Any) -> tuple[threading.Thread, list[int]]:
    answers: list[int] = []

    def send() -> None:
        response = app.test_client().post(URL, json=body)
        answers.append(response.status_code)

    sender = threading.Thread(target=send)
    sender.start()
    return sender, answers


def test_the_writer_stores_no_further_than_a_batch_ahead_of_the_processor(
    durable: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Storing is cheaper than applying: a writer running ahead would fill the inbox faster
    than it drains, and each delivery would wait longer for its decision. So the writer
    waits while the processor is a batch behind, and the callbacks behind it wait for it."""
    monkeypatch.setattr(intake_module, "BACKLOG_LIMIT", 2)
    monkeypatch.setattr(intake_module, "BACKLOG_WAIT", 30.0)
    entered, released = _held_processor(monkeypatch, durable)
    client = durable.test_client()
    first = [event("runner_on_ok", T0 + n, "web1", execution_id="exec-ahead") for n in range(2)]
    assert post(client, first) == {"accepted": 2, "duplicates": 0}
    eventually(entered.is_set, "the processor holds the first batch")

    sender, answers = _post_in_background(
        durable, event("runner_on_ok", T0 + 5, "web2", execution_id="exec-behind")
    )
    sender.join(0.5)
    assert answers == [] and counts(durable)["events"] == 2  # waiting, not stored
    released.set()
    sender.join(20)

    assert answers == [202]
    eventually(lambda: counts(durable) == {"events": 3, "pending": 0, "decisions": 0}, "all")
    assert get_runtime(durable).intake._backlog.size == 0


def test_a_stalled_processor_slows_the_writer_down_but_does_not_stop_it(
    durable: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(intake_module, "BACKLOG_LIMIT", 1)
    monkeypatch.setattr(intake_module, "BACKLOG_WAIT", 0.2)
    entered, released = _held_processor(monkeypatch, durable)
    client = durable.test_client()
    post(client, event("runner_on_ok", T0, "web1", execution_id="exec-stalled"))
    eventually(entered.is_set, "the processor holds the first batch")

    answer = post(client, event("runner_on_ok", T0 + 1, "web2", execution_id="exec-next"))

    assert answer == {"accepted": 1, "duplicates": 0}
    assert entered.is_set() and not released.is_set()  # stored while the processor is held
    assert counts(durable) == {"events": 2, "pending": 2, "decisions": 0}
    released.set()
    eventually(lambda: counts(durable)["pending"] == 0, "both applied")


def test_the_writer_waits_for_a_stalled_processor_once_not_once_a_batch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Waiting on a processor that does not move would only add to every answer (up to a
    503 once the answer's timeout runs out): after a wait ran out, the writer waits again
    only once the processor has finished a batch."""
    backlog = Backlog()
    waits: list[float] = []
    real_wait_for = backlog._changed.wait_for

    def counted(predicate: Callable[[], bool], timeout: float | None = None) -> bool:
        waits.append(timeout or 0.0)
        return real_wait_for(predicate, 0)

    monkeypatch.setattr(backlog._changed, "wait_for", counted)
    backlog.stored(5)

    assert backlog.wait_below(1, 0.5) is False  # ran out: the processor is stalled
    assert backlog.wait_below(1, 0.5) is False
    assert backlog.wait_below(1, 0.5) is False
    assert waits == [0.5]  # waited once
    backlog.applied(2)  # a batch finished: it moves again
    assert backlog.wait_below(1, 0.5) is False
    assert waits == [0.5, 0.5]
    backlog.applied(3)
    assert backlog.wait_below(1, 0.5) is True
