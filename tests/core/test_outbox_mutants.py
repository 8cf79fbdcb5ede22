"""The restart call, branch by branch: what is asked of the Runner and what each answer means.

No database: `send_restart` is the part of the exactly-once rule that talks to the Runner
(docs/operations.md: the Runner is asked first, every time; a refusal is explained by a
second look; an answer whose fate is unknown is retried only after a wait). These tests kill
the mutants of app/core/outbox.py that the lease tests leave alive (docs/TESTING.md).
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from app.core.errors import Conflict
from app.core.ingest import (
    document_deliveries,
    ingest_and_decide,
    parse_deliveries,
    record_documents,
)
from app.core.operator import cancel_restart, manual_restart, pause_automatic
from app.core.outbox import (
    CallResult,
    ClaimedRestart,
    Claims,
    IllegalTransition,
    RetryPolicy,
    claim_due_restarts,
    record_result,
    retry_delay,
    send_restart,
    transition,
)
from app.db import transaction
from app.models import Execution, Restart, RestartAttempt, RestartState
from app.policy import parse_policy
from app.runner.documents import ExecutionDocument, Timer
from app.runner.errors import (
    RunnerAuthError,
    RunnerBadResponse,
    RunnerError,
    RunnerNotFound,
    RunnerRejected,
    RunnerTimeout,
    RunnerUnavailable,
)
from app.runner.keys import RestartHost
from tests.feed import ACCOUNT, JOB_ID, failing_run_events

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
BUDGET = 13.0


def doc(status: str = "FAILURE", timers: int = 1) -> ExecutionDocument:
    return ExecutionDocument(
        "e1", "j1", "A", status, tuple(Timer(n, n + 1) for n in range(timers)), ("web1",),
        None, False, None,
    )  # fmt: skip


class Runner:
    """A Runner client that answers from a script and remembers every call."""

    def __init__(self, *, gets: list[Any] | None = None, restart: Any = None) -> None:
        self.gets = gets if gets is not None else [doc()]
        self.restart_answer = restart if restart is not None else doc("PENDING")
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def ensure_token(self) -> None:
        self.calls.append(("ensure_token", (), {}))

    def lookup_execution(self, *args: Any) -> ExecutionDocument:
        self.calls.append(("lookup_execution", args, {}))
        return self._answer(self.gets.pop(0))

    def restart(self, *args: Any, **kwargs: Any) -> ExecutionDocument:
        self.calls.append(("restart", args, kwargs))
        return self._answer(self.restart_answer)

    @staticmethod
    def _answer(answer: Any) -> ExecutionDocument:
        if isinstance(answer, Exception):
            raise answer
        assert isinstance(answer, ExecutionDocument)
        return answer

    def named(self, name: str) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
        return [(args, kwargs) for called, args, kwargs in self.calls if called == name]


def claim(
    *, lease_left: float = 30.0, attempt: int = 1, hosts: tuple[str, ...] = ("web1", "web2")
) -> ClaimedRestart:
    return ClaimedRestart(
        restart_id=1,
        attempt_id=1,
        execution_id="e1",
        account="A",
        job_id="j1",
        run_index=0,
        hosts=hosts,
        timers_before=1,
        attempt=attempt,
        lease_expires_at=NOW + dt.timedelta(seconds=lease_left),
    )


def send(runner: Runner, claimed: ClaimedRestart | None = None, keys: str | None = None) -> Any:
    return send_restart(runner, claimed or claim(), keys, BUDGET, clock=lambda: NOW)  # type: ignore[arg-type]


def test_the_runner_is_asked_for_the_claimed_execution_before_the_restart_is_sent() -> None:
    runner = Runner()

    before = time.monotonic()
    result = send(runner)
    after = time.monotonic()

    assert result == CallResult("restarted", "done", 200, "execution is PENDING", doc("PENDING"))
    assert [name for name, _, _ in runner.calls] == ["ensure_token", "lookup_execution", "restart"]
    assert runner.named("lookup_execution") == [(("A", "j1", "e1"), {})]
    ((args, kwargs),) = runner.named("restart")
    assert args == ("A", "j1", "e1")
    assert kwargs["hosts"] == (RestartHost("web1"), RestartHost("web2"))
    assert kwargs["ssh_private_key"] is None
    # The request may leave only while the lease has the call's budget left: 30 - 13 s.
    assert before + 17 <= kwargs["send_by"] <= after + 17


def test_a_restart_without_hosts_sends_no_host_list() -> None:
    runner = Runner()

    send(runner, claim(hosts=()))

    ((_, kwargs),) = runner.named("restart")
    assert kwargs["hosts"] is None


def test_the_key_map_gives_the_default_key_and_each_hosts_own(tmp_path: Path) -> None:
    (tmp_path / "default.key").write_text("DEFAULT-KEY")
    (tmp_path / "web2.key").write_text("WEB2-KEY")
    keys = tmp_path / "keys.yaml"
    keys.write_text('"web2": web2.key\n"*": default.key\n')
    runner = Runner()

    result = send(runner, keys=str(keys))

    assert result.state == "done"
    ((_, kwargs),) = runner.named("restart")
    assert kwargs["ssh_private_key"] == "REVGQVVMVC1LRVk="  # base64 of DEFAULT-KEY
    assert [h.id for h in kwargs["hosts"]] == ["web1", "web2"]
    assert kwargs["hosts"][0].ssh_private_key is None
    assert kwargs["hosts"][1].ssh_private_key == "V0VCMi1LRVk="


def test_an_unusable_key_map_is_retried_and_nothing_is_sent(tmp_path: Path) -> None:
    runner = Runner()

    result = send(runner, keys=str(tmp_path / "missing.yaml"))

    assert (result.outcome, result.state, result.status_code) == ("key_error", "retry", None)
    assert "missing.yaml" in result.detail
    assert runner.named("restart") == []


def test_an_execution_that_is_gone_needs_no_restart() -> None:
    runner = Runner(gets=[RunnerNotFound("no such execution", status_code=404)])

    result = send(runner)

    assert result == CallResult("gone", "not_needed", 404, "execution no longer exists")
    assert runner.named("restart") == []


def test_a_failed_look_is_retried_and_nothing_is_sent() -> None:
    error = RunnerUnavailable("busy", status_code=503)
    runner = Runner(gets=[error])

    result = send(runner)

    assert result == CallResult("unavailable", "retry", 503, str(error), uncertain=False)
    assert runner.named("restart") == []


def test_a_first_attempt_finding_the_execution_restarted_leaves_it_not_needed() -> None:
    runner = Runner(gets=[doc("RUNNING", timers=1)])

    result = send(runner)

    assert result == CallResult(
        "already_restarted",
        "not_needed",
        None,
        "the execution was restarted some other way (RUNNING)",
        doc("RUNNING", timers=1),
    )
    assert runner.named("restart") == []


def test_a_later_attempt_finding_a_new_run_counts_the_earlier_call_as_done() -> None:
    runner = Runner(gets=[doc("FAILURE", timers=2)])

    result = send(runner, claim(attempt=2))

    assert result == CallResult(
        "already_restarted", "done", None, "an earlier attempt had taken effect", doc(timers=2)
    )
    assert runner.named("restart") == []


def test_a_still_failed_execution_with_no_new_run_is_restarted_on_a_later_attempt() -> None:
    runner = Runner(gets=[doc("FAILURE", timers=1)])

    result = send(runner, claim(attempt=2))

    assert (result.outcome, result.state) == ("restarted", "done")
    assert len(runner.named("restart")) == 1


@pytest.mark.parametrize(("lease_left", "sent"), [(BUDGET, False), (BUDGET + 0.5, True)])
def test_the_call_leaves_only_while_the_lease_outlasts_it(lease_left: float, sent: bool) -> None:
    runner = Runner()

    result = send(runner, claim(lease_left=lease_left))

    assert len(runner.named("restart")) == int(sent)
    if not sent:
        assert result == CallResult(
            "lease_expiring", "retry", None, "too little of the lease left; not sent"
        )


@pytest.mark.parametrize(
    ("error", "outcome", "uncertain"),
    [
        (RunnerTimeout("no answer"), "timeout", True),
        (RunnerUnavailable("dropped", status_code=None, sent=True), "unavailable", True),
        (RunnerUnavailable("proxy", status_code=502), "unavailable", True),
        (RunnerUnavailable("proxy", status_code=504), "unavailable", True),
        (RunnerUnavailable("busy", status_code=503), "unavailable", False),
        (RunnerUnavailable("refused", status_code=None, sent=False), "unavailable", False),
        (RunnerAuthError("token refused", status_code=401), "auth_failed", False),
        (RunnerBadResponse("not json", status_code=200), "bad_response", False),
    ],
)
def test_a_failed_call_is_retried_and_marked_uncertain_when_it_may_have_been_applied(
    error: RunnerError, outcome: str, uncertain: bool
) -> None:
    runner = Runner(restart=error)

    result = send(runner)

    assert result == CallResult(outcome, "retry", error.status_code, str(error), None, uncertain)


def refused(*gets: Any, error: RunnerError | None = None) -> tuple[CallResult, Runner]:
    runner = Runner(
        gets=[doc(), *gets], restart=error or RunnerRejected("not now", status_code=409)
    )
    return send(runner), runner


def test_a_refusal_is_explained_by_a_second_look_at_the_execution() -> None:
    result, runner = refused(doc("FAILURE"))

    assert result == CallResult("rejected", "failed", 409, "not now", doc("FAILURE"))
    assert runner.named("lookup_execution") == [(("A", "j1", "e1"), {})] * 2


def test_a_refusal_because_the_execution_was_restarted_meanwhile_needs_nothing_more() -> None:
    result, _ = refused(doc("FAILURE", timers=2))

    assert result == CallResult(
        "already_restarted",
        "not_needed",
        409,
        "the execution was already restarted",
        doc("FAILURE", timers=2),
    )


def test_a_refusal_because_the_execution_no_longer_failed_needs_nothing_more() -> None:
    result, _ = refused(doc("SUCCESS"))

    assert result == CallResult(
        "no_longer_failed", "not_needed", 409, "the execution is SUCCESS", doc("SUCCESS")
    )


def test_a_refusal_of_an_execution_that_is_gone_needs_nothing_more() -> None:
    result, _ = refused(RunnerNotFound("gone", status_code=404))

    assert result == CallResult("gone", "not_needed", 409, "execution no longer exists")


def test_a_refusal_that_cannot_be_explained_fails_the_restart() -> None:
    result, _ = refused(RunnerUnavailable("down", status_code=503))

    assert result == CallResult(
        "rejected", "failed", 409, "not now; checking the execution failed too: down"
    )


def test_a_restart_answered_not_found_is_explained_like_a_refusal() -> None:
    result, runner = refused(doc("SUCCESS"), error=RunnerNotFound("no job", status_code=404))

    assert (result.outcome, result.state, result.status_code) == (
        "no_longer_failed",
        "not_needed",
        404,
    )
    assert len(runner.named("lookup_execution")) == 2


@pytest.mark.parametrize(
    ("attempt", "base", "delay"),
    [(0, 2.0, 2.0), (1, 2.0, 2.0), (2, 2.0, 4.0), (3, 2.0, 8.0), (12, 1.0, 300.0)],
)
def test_retries_back_off_doubling_up_to_five_minutes(
    attempt: int, base: float, delay: float
) -> None:
    assert retry_delay(attempt, base) == delay


def test_a_retry_delay_of_exactly_the_cap_is_kept() -> None:
    assert retry_delay(1, 300.0) == 300.0
    assert retry_delay(2, 200.0, max_seconds=350.0) == 350.0


# --- claims and recorded answers, on a database ----------------------------------------------

T0 = int(NOW.timestamp() * 1000)
NO_LIMITS = parse_policy(
    "version: 1\ndefaults: {backoff: {initial: 0s}}\n"
    "limits: {per_job: null, per_account: null, global: null, per_host: null}\n"
    "circuit_breaker: null\n",
    "test.yaml",
)
SKIP_ALL = parse_policy("version: 1\ndefaults: {action: skip}\n", "test.yaml")
RETRY = RetryPolicy(max_attempts=5, base_seconds=1.0, uncertain_seconds=10.0)
LATER = NOW + dt.timedelta(seconds=11)


def failed(
    sessions: sessionmaker[Session], execution_id: str, job_id: str = JOB_ID, rules: Any = None
) -> int | None:
    """A failing run of `execution_id` is stored and decided; the id of its restart, if any."""
    feed = failing_run_events(T0, prefix=execution_id, execution_id=execution_id, job_id=job_id)
    with transaction(sessions) as session:
        ingest_and_decide(
            session, parse_deliveries(feed, None, 500), NOW, rules or NO_LIMITS, False
        )
    with sessions() as session:
        return session.scalars(
            select(Restart.id)
            .join(Execution, Execution.id == Restart.execution_pk)
            .where(Execution.execution_id == execution_id)
        ).one_or_none()


def claim_at(
    sessions: sessionmaker[Session], worker: str, at: dt.datetime, limit: int = 10
) -> Claims:
    with transaction(sessions) as session:
        return claim_due_restarts(session, worker, at, 10.0, limit)


def restart_row(sessions: sessionmaker[Session], restart_id: int | None) -> Restart:
    with sessions() as session:
        restart = session.get(Restart, restart_id)
        assert restart is not None
        return restart


def set_due(sessions: sessionmaker[Session], restart_id: int | None, due: dt.datetime) -> None:
    with transaction(sessions) as session:
        session.execute(update(Restart).where(Restart.id == restart_id).values(due_at=due))


def attempts_of(sessions: sessionmaker[Session], restart_id: int) -> list[RestartAttempt]:
    with sessions() as session:
        query = select(RestartAttempt).where(RestartAttempt.restart_id == restart_id)
        return list(session.scalars(query.order_by(RestartAttempt.id)))


def execution_row(sessions: sessionmaker[Session], execution_id: str = "exec-a") -> Execution:
    with sessions() as session:
        query = select(Execution).where(Execution.execution_id == execution_id)
        return session.scalars(query).one()


def test_a_claim_tells_whether_another_restart_is_due_beside_it(
    sessions: sessionmaker[Session],
) -> None:
    """The dispatcher wakes another only when there is more (else it claims in vain)."""
    failed(sessions, "exec-a")
    failed(sessions, "exec-b")

    first = claim_at(sessions, "w1", NOW, limit=1)
    second = claim_at(sessions, "w2", NOW, limit=1)
    third = claim_at(sessions, "w3", NOW, limit=1)

    assert (len(first), first.more) == (1, True)
    assert (len(second), second.more) == (1, False)  # the one it looked at beside, it took
    assert (len(third), third.more) == (0, False)
    assert first[0].restart_id != second[0].restart_id


def test_a_claim_takes_a_lease_and_opens_an_attempt(sessions: sessionmaker[Session]) -> None:
    restart_id = failed(sessions, "exec-a")
    assert restart_id is not None

    (claimed,) = claim_at(sessions, "w1", NOW)

    (attempt,) = attempts_of(sessions, restart_id)
    assert claimed == ClaimedRestart(
        restart_id=restart_id,
        attempt_id=attempt.id,
        execution_id="exec-a",
        account=ACCOUNT,
        job_id=JOB_ID,
        run_index=0,
        hosts=("web2", "web3"),
        timers_before=1,
        attempt=1,
        lease_expires_at=NOW + dt.timedelta(seconds=10),
    )
    row = restart_row(sessions, restart_id)
    assert (row.state, row.lease_owner, row.attempts) == ("in_flight", "w1", 1)
    assert (row.lease_expires_at, row.updated_at) == (NOW + dt.timedelta(seconds=10), NOW)
    assert (attempt.worker, attempt.started_at, attempt.outcome) == ("w1", NOW, "started")
    assert attempt.finished_at is None


def test_a_restart_is_claimed_once_it_is_due_and_not_before(
    sessions: sessionmaker[Session],
) -> None:
    restart_id = failed(sessions, "exec-a")
    due = NOW + dt.timedelta(seconds=5)
    set_due(sessions, restart_id, due)

    assert claim_at(sessions, "w1", due - dt.timedelta(seconds=1)) == []
    assert [c.restart_id for c in claim_at(sessions, "w1", due)] == [restart_id]


def test_an_expired_lease_is_claimed_again_and_the_dead_holders_attempt_closed(
    sessions: sessionmaker[Session],
) -> None:
    restart_id = failed(sessions, "exec-a")
    assert restart_id is not None
    claim_at(sessions, "w1", NOW)

    assert claim_at(sessions, "w2", NOW + dt.timedelta(seconds=10)) == []  # not yet expired
    (again,) = claim_at(sessions, "w2", LATER)

    assert (again.attempt, again.lease_expires_at) == (2, LATER + dt.timedelta(seconds=10))
    first, second = attempts_of(sessions, restart_id)
    assert (first.outcome, first.finished_at, first.detail) == (
        "interrupted",
        LATER,
        "lease expired mid-call",
    )
    assert (second.worker, second.outcome, second.finished_at) == ("w2", "started", None)
    row = restart_row(sessions, restart_id)
    assert (row.lease_owner, row.attempts) == ("w2", 2)


def test_claims_take_the_longest_due_first_up_to_the_limit(
    sessions: sessionmaker[Session],
) -> None:
    ids = [failed(sessions, f"exec-{n}", job_id=f"job-{n}") for n in range(3)]
    for restart_id, seconds_ago in zip(ids, (3, 1, 2), strict=True):
        set_due(sessions, restart_id, NOW - dt.timedelta(seconds=seconds_ago))

    claimed = claim_at(sessions, "w1", NOW, limit=2)

    assert [c.restart_id for c in claimed] == [ids[0], ids[2]]
    assert restart_row(sessions, ids[1]).state == "pending"


def test_a_global_pause_holds_automatic_restarts(sessions: sessionmaker[Session]) -> None:
    failed(sessions, "exec-a")
    with transaction(sessions) as session:
        pause_automatic(session, None, "alice", NOW)

    assert claim_at(sessions, "w1", NOW) == []


def test_a_job_pause_holds_only_that_jobs_automatic_restarts(
    sessions: sessionmaker[Session],
) -> None:
    failed(sessions, "exec-a", job_id="job-paused")
    other = failed(sessions, "exec-b", job_id="job-free")
    with transaction(sessions) as session:
        pause_automatic(session, "job-paused", "alice", NOW)

    assert [c.restart_id for c in claim_at(sessions, "w1", NOW)] == [other]


def test_a_manual_restart_goes_during_a_pause(sessions: sessionmaker[Session]) -> None:
    failed(sessions, "exec-a", rules=SKIP_ALL)
    with transaction(sessions) as session:
        pause_automatic(session, None, "alice", NOW)
        stored = manual_restart(session, "exec-a", None, "alice", NOW, NO_LIMITS)
        assert stored.restart is not None
        manual_id = stored.restart.id

    assert [c.restart_id for c in claim_at(sessions, "w1", NOW)] == [manual_id]


def test_a_dead_holders_restart_is_claimed_during_a_pause_to_be_settled(
    sessions: sessionmaker[Session],
) -> None:
    restart_id = failed(sessions, "exec-a")
    claim_at(sessions, "w1", NOW)
    with transaction(sessions) as session:
        pause_automatic(session, None, "alice", NOW)

    assert [c.restart_id for c in claim_at(sessions, "w2", LATER)] == [restart_id]


def move_on(sessions: sessionmaker[Session]) -> None:
    """The execution's next run starts, some other way than through this restart."""
    newer = ExecutionDocument(
        "exec-a", JOB_ID, ACCOUNT, "RUNNING", (Timer(T0, T0 + 1000), Timer(T0 + 5000, None)), (),
        None, None, None,
    )  # fmt: skip
    with transaction(sessions) as session:
        record_documents(session, [newer], NOW)


def test_a_restart_whose_execution_moved_on_is_settled_unsent(
    sessions: sessionmaker[Session],
) -> None:
    restart_id = failed(sessions, "exec-a")
    move_on(sessions)

    assert claim_at(sessions, "w1", NOW) == []

    row = restart_row(sessions, restart_id)
    assert (row.state, row.outcome, row.completed_at) == ("not_needed", "superseded", NOW)
    assert row.outcome_detail == (
        "the execution moved on (run 2, RUNNING) before this restart was sent"
    )


@pytest.mark.parametrize(("run_index", "status"), [(0, "SUCCESS"), (1, "FAILURE")])
def test_a_restart_is_sent_only_for_the_failed_run_it_was_decided_for(
    sessions: sessionmaker[Session], run_index: int, status: str
) -> None:
    restart_id = failed(sessions, "exec-a")
    with transaction(sessions) as session:
        session.execute(update(Execution).values(run_index=run_index, status=status))

    assert claim_at(sessions, "w1", NOW) == []
    assert restart_row(sessions, restart_id).state == "not_needed"


def test_a_dead_holders_restart_is_claimed_to_be_verified_even_if_the_execution_moved_on(
    sessions: sessionmaker[Session],
) -> None:
    restart_id = failed(sessions, "exec-a")
    claim_at(sessions, "w1", NOW)
    move_on(sessions)

    (again,) = claim_at(sessions, "w2", LATER)

    assert (again.restart_id, again.attempt) == (restart_id, 2)


def record(
    sessions: sessionmaker[Session], result: CallResult, retry: RetryPolicy = RETRY
) -> tuple[RestartState, Restart]:
    restart_id = failed(sessions, "exec-a")
    (claimed,) = claim_at(sessions, "w1", NOW)
    with transaction(sessions) as session:
        state = record_result(session, claimed, "w1", result, LATER, retry)
    return state, restart_row(sessions, restart_id)


def test_the_attempt_is_recorded_with_the_runners_answer(sessions: sessionmaker[Session]) -> None:
    _, row = record(sessions, CallResult("unavailable", "retry", 503, "busy"))

    (attempt,) = attempts_of(sessions, row.id)
    assert (attempt.finished_at, attempt.status_code, attempt.outcome, attempt.detail) == (
        LATER,
        503,
        "unavailable",
        "busy",
    )


def test_a_retry_puts_the_restart_back_with_a_backoff(sessions: sessionmaker[Session]) -> None:
    state, row = record(sessions, CallResult("unavailable", "retry", 503, "busy"))

    assert state == RestartState.PENDING
    assert (row.state, row.due_at, row.outcome, row.outcome_detail) == (
        "pending",
        LATER + dt.timedelta(seconds=1),
        "unavailable",
        "busy",
    )
    assert (row.lease_owner, row.lease_expires_at, row.completed_at) == (None, None, None)


@pytest.mark.parametrize(("base", "wait"), [(1.0, 10.0), (30.0, 30.0)])
def test_an_uncertain_call_is_retried_no_sooner_than_the_uncertain_wait(
    sessions: sessionmaker[Session], base: float, wait: float
) -> None:
    retry = RetryPolicy(max_attempts=5, base_seconds=base, uncertain_seconds=10.0)

    _, row = record(sessions, CallResult("timeout", "retry", None, "late", uncertain=True), retry)

    assert row.due_at == LATER + dt.timedelta(seconds=wait)


def test_the_last_attempt_gives_up(sessions: sessionmaker[Session]) -> None:
    retry = RetryPolicy(max_attempts=1, base_seconds=1.0, uncertain_seconds=10.0)
    given_up = REGISTRY.get_sample_value("respawn_restarts_given_up_total") or 0.0

    state, row = record(sessions, CallResult("unavailable", "retry", 503, "busy"), retry)

    assert state == RestartState.FAILED
    assert (row.state, row.outcome, row.completed_at) == ("failed", "gave_up", LATER)
    assert row.outcome_detail == "gave up after 1 attempts; last: unavailable: busy"
    assert REGISTRY.get_sample_value("respawn_restarts_given_up_total") == given_up + 1


def test_a_retry_before_the_last_attempt_is_not_given_up(sessions: sessionmaker[Session]) -> None:
    retry = RetryPolicy(max_attempts=2, base_seconds=1.0, uncertain_seconds=10.0)

    state, _ = record(sessions, CallResult("unavailable", "retry", 503, "busy"), retry)

    assert state == RestartState.PENDING


def test_each_call_is_counted_by_outcome(sessions: sessionmaker[Session]) -> None:
    labels = {"outcome": "restarted"}
    before = REGISTRY.get_sample_value("respawn_restart_calls_total", labels) or 0.0

    record(sessions, CallResult("restarted", "done", 200, "execution is PENDING"))

    assert REGISTRY.get_sample_value("respawn_restart_calls_total", labels) == before + 1


def test_a_sent_restart_moves_the_execution_to_its_next_run(
    sessions: sessionmaker[Session],
) -> None:
    state, row = record(sessions, CallResult("restarted", "done", 200, "execution is PENDING"))

    assert state == RestartState.DONE
    assert (row.state, row.sent_at, row.completed_at, row.lease_owner) == (
        "done",
        LATER,
        LATER,
        None,
    )
    execution = execution_row(sessions)
    assert (execution.restart_count, execution.run_index, execution.status) == (1, 1, "PENDING")


def test_a_sent_restarts_answer_is_recorded(sessions: sessionmaker[Session]) -> None:
    answer = ExecutionDocument(
        "exec-a", JOB_ID, ACCOUNT, "RUNNING", (Timer(T0, T0 + 1000), Timer(T0 + 5000, None)), (),
        None, None, None,
    )  # fmt: skip

    record(sessions, CallResult("restarted", "done", 200, "execution is RUNNING", answer))

    execution = execution_row(sessions)
    assert (execution.restart_count, execution.run_index, execution.status) == (1, 1, "RUNNING")


def test_an_answer_that_needs_no_restart_still_records_what_the_runner_said(
    sessions: sessionmaker[Session],
) -> None:
    answer = ExecutionDocument(
        "exec-a", JOB_ID, ACCOUNT, "RUNNING", (Timer(T0, T0 + 1000), Timer(T0 + 5000, None)), (),
        None, None, None,
    )  # fmt: skip

    state, row = record(
        sessions, CallResult("already_restarted", "not_needed", None, "restarted", answer)
    )

    assert (state, row.state, row.sent_at) == (RestartState.NOT_NEEDED, "not_needed", None)
    execution = execution_row(sessions)
    assert (execution.restart_count, execution.run_index, execution.status) == (0, 1, "RUNNING")


def test_a_refused_restart_fails_and_leaves_the_execution_as_it_was(
    sessions: sessionmaker[Session],
) -> None:
    state, row = record(sessions, CallResult("rejected", "failed", 409, "not now"))

    assert (state, row.state, row.outcome, row.outcome_detail) == (
        RestartState.FAILED,
        "failed",
        "rejected",
        "not now",
    )
    execution = execution_row(sessions)
    assert (execution.restart_count, execution.run_index, execution.status) == (0, 0, "FAILURE")


def test_an_answer_after_the_row_was_settled_by_the_next_holder_changes_nothing(
    sessions: sessionmaker[Session],
) -> None:
    restart_id = failed(sessions, "exec-a")
    (slow,) = claim_at(sessions, "slow", NOW)
    (fresh,) = claim_at(sessions, "fresh", LATER)
    with transaction(sessions) as session:
        record_result(
            session, fresh, "fresh", CallResult("rejected", "failed", 409, "no"), LATER, RETRY
        )

    with transaction(sessions) as session:
        state = record_result(
            session, slow, "slow", CallResult("restarted", "done", 200, "ok"), LATER, RETRY
        )

    assert state == RestartState.FAILED
    row = restart_row(sessions, restart_id)
    assert (row.state, row.outcome, row.sent_at) == ("failed", "rejected", None)
    slow_attempt = attempts_of(sessions, slow.restart_id)[0]
    assert (slow_attempt.outcome, slow_attempt.finished_at) == ("restarted", LATER)


def test_every_sent_restart_is_counted_on_its_execution(sessions: sessionmaker[Session]) -> None:
    record(sessions, CallResult("restarted", "done", 200, "execution is PENDING"))
    again = ExecutionDocument(
        "exec-a", JOB_ID, ACCOUNT, "FAILURE", (Timer(T0, T0 + 1000), Timer(T0 + 5000, T0 + 6000)),
        ("web2",), None, None, None,
    )  # fmt: skip
    with transaction(sessions) as session:
        ingest_and_decide(session, document_deliveries([again]), LATER, NO_LIMITS, False)
    later = LATER + dt.timedelta(minutes=1)
    with transaction(sessions) as session:
        (second,) = claim_due_restarts(session, "w1", later, 10.0, 10)
        record_result(
            session, second, "w1", CallResult("restarted", "done", 200, "ok"), later, RETRY
        )

    execution = execution_row(sessions)
    assert (execution.restart_count, execution.run_index) == (2, 2)


def test_only_a_pending_restart_can_be_cancelled(sessions: sessionmaker[Session]) -> None:
    restart_id = failed(sessions, "exec-a")
    with transaction(sessions) as session:
        cancelled = cancel_restart(session, restart_id, "alice", NOW)
        assert (cancelled.state, cancelled.cancelled_by, cancelled.outcome) == (
            "cancelled",
            "alice",
            "cancelled",
        )
        assert cancelled.outcome_detail == "cancelled by alice"

    other = failed(sessions, "exec-b", job_id="job-b")
    claim_at(sessions, "w1", NOW)
    with transaction(sessions) as session, pytest.raises(Conflict) as refused:
        cancel_restart(session, other, "alice", NOW)
    assert refused.value.code == "not_pending"
    assert str(refused.value) == (
        "restart is in_flight; only a pending or held restart can be cancelled"
    )


def test_a_lease_still_held_does_not_take_a_claims_place(sessions: sessionmaker[Session]) -> None:
    held = failed(sessions, "exec-a")
    claim_at(sessions, "w1", NOW)  # in flight until NOW + 10 s
    due = failed(sessions, "exec-b", job_id="job-b")
    set_due(sessions, due, NOW + dt.timedelta(seconds=1))

    claimed = claim_at(sessions, "w2", NOW + dt.timedelta(seconds=2), limit=1)

    assert [c.restart_id for c in claimed] == [due]
    assert restart_row(sessions, held).lease_owner == "w1"


def test_a_superseded_restart_does_not_stop_the_claim_of_the_next(
    sessions: sessionmaker[Session],
) -> None:
    superseded = failed(sessions, "exec-a")
    move_on(sessions)
    following = failed(sessions, "exec-b", job_id="job-b")
    set_due(sessions, following, NOW + dt.timedelta(seconds=1))

    claimed = claim_at(sessions, "w1", NOW + dt.timedelta(seconds=2))

    assert [c.restart_id for c in claimed] == [following]
    assert restart_row(sessions, superseded).state == "not_needed"


def test_taking_over_a_lease_closes_only_that_restarts_open_attempt(
    sessions: sessionmaker[Session],
) -> None:
    first = failed(sessions, "exec-a")
    claim_at(sessions, "w1", NOW)  # lease until NOW + 10 s
    second = failed(sessions, "exec-b", job_id="job-b")
    set_due(sessions, second, NOW + dt.timedelta(seconds=5))
    claim_at(sessions, "w1", NOW + dt.timedelta(seconds=5))  # lease until NOW + 15 s

    claim_at(sessions, "w2", LATER)  # takes over the first only

    assert [a.outcome for a in attempts_of(sessions, first)] == ["interrupted", "started"]
    assert [a.outcome for a in attempts_of(sessions, second)] == ["started"]


def test_a_finished_attempt_keeps_its_outcome_when_the_restart_is_claimed_again(
    sessions: sessionmaker[Session],
) -> None:
    restart_id = failed(sessions, "exec-a")
    (claimed,) = claim_at(sessions, "w1", NOW)
    with transaction(sessions) as session:
        busy = CallResult("unavailable", "retry", 503, "busy")
        record_result(session, claimed, "w1", busy, NOW, RETRY)

    claim_at(sessions, "w1", LATER)

    assert [a.outcome for a in attempts_of(sessions, restart_id)] == ["unavailable", "started"]


def test_an_illegal_transition_names_the_restart_and_the_move() -> None:
    restart = Restart(id=5, state="done")

    with pytest.raises(IllegalTransition, match=r"^restart 5: done -> pending is not allowed$"):
        transition(restart, RestartState.PENDING, NOW)
