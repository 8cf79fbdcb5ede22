"""Backtesting: replay the stored failures under a candidate policy, next to what was decided.

``run_backtest`` walks the stored decisions in time order, in keyset batches each read in a
short transaction of its own, rebuilds each failure's engine input from the stored record, and
simulates the budgets, the restart counts, the host failure history and the circuit breaker
from the candidate's own choices. It keeps only bounded state: sliding windows pruned to their
length, one small record per execution, counters per job, host and reason code. So memory stays
flat however many events are stored. The semantics are in docs/policy.md, "Backtesting".
"""

from __future__ import annotations

import bisect
import datetime as dt
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from app.decisions import MAX_HOST_HISTORY, MAX_OUTCOMES, policy_host_failure
from app.documents import FAILED_STATUSES, FINAL_STATUSES
from app.models import Decision, Execution, ExecutionRun, HostFailure, Job, Restart
from app.policy import (
    BudgetUsage,
    DecisionInput,
    Policy,
    ReasonCode,
    RestartOutcome,
    decide_restart,
)
from app.policy import Decision as PolicyDecision
from app.policy import HostFailure as PolicyHostFailure

BATCH_SIZE = 1000
"""Stored decisions read per batch (one short transaction, a few queries)."""
TOP = 10
MAX_SAMPLES = 20
NO_HOST_LIST = "(no host list)"
"""The per-host key of restarts that name no hosts (``hosts: none``, INIT_FAILURE)."""
NOT_REACHED = "not_reached"
"""The candidate's "decision" on a run that would not have happened under it."""
TRIP_CODES = (
    ReasonCode.QUARANTINE,
    ReasonCode.BUDGET_PER_JOB,
    ReasonCode.BUDGET_PER_ACCOUNT,
    ReasonCode.BUDGET_GLOBAL,
    ReasonCode.BREAKER_OPEN,
)

SessionScope = Callable[[], AbstractContextManager[Session]]
"""Opens one transaction, e.g. ``lambda: transaction(app)``; a backtest opens one per batch."""


# --- the report ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Side:
    """What one policy did (current: the stored decisions) or would have done (candidate)."""

    restarts: int
    skips: dict[str, int]
    """Skipped failures by reason code."""
    trips: dict[str, int]
    """Failures skipped by a quarantine, a budget or the breaker, by reason code."""
    quarantined_hosts: int
    """Hosts left out of restarts (or blocking them) because they were quarantined."""


@dataclass(frozen=True)
class Tally:
    """Restarts of one job or host under each policy."""

    key: str
    current: int
    candidate: int


@dataclass(frozen=True)
class Verdict:
    action: str
    """restart, skip, or ``not_reached`` (candidate only)."""
    hosts: tuple[str, ...]
    rule: str
    reason_code: str
    reason: str


@dataclass(frozen=True)
class Difference:
    at: dt.datetime
    execution_id: str
    run_index: int
    job_id: str
    current: Verdict
    candidate: Verdict


@dataclass(frozen=True)
class BacktestReport:
    candidate_version: str
    since: dt.datetime
    until: dt.datetime
    warm_up_from: dt.datetime
    """Decisions from here to ``since`` fill the candidate's windows but are not reported."""
    current_versions: dict[str, int]
    """Stored decisions in the period by the policy version that made them."""
    failed_runs: int
    """Stored policy decisions in the period: every failed run respawn decided."""
    replayed: int
    not_reached: int
    """Failed runs that would not have happened: the candidate did not restart the run before."""
    not_reached_restarted: int
    """Of those, how many the current policy restarted."""
    differ: int
    """Replayed runs whose action, hosts, rule or reason code differ."""
    action_differs: int
    current: Side
    candidate: Side
    per_job: tuple[Tally, ...]
    """The top jobs by restarts under either policy, with both counts."""
    per_host: tuple[Tally, ...]
    samples: tuple[Difference, ...]
    """The first differences in time order, at most ``MAX_SAMPLES``."""


# --- the stored record, batch by batch ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Stored:
    """One stored decision with what its replay needs: plain values, no ORM objects."""

    id: int
    at: dt.datetime
    origin: str
    verdict: Verdict
    excluded_codes: tuple[str, ...]
    policy_version: str
    execution_pk: int
    execution_id: str
    account: str
    job_id: str
    first_failure_at: dt.datetime | None
    run_index: int
    run_status: str = "FAILURE"
    job_description: str | None = None
    failed_hosts: tuple[PolicyHostFailure, ...] = ()
    failure_times: tuple[tuple[str, dt.datetime], ...] = ()
    next_outcome: RestartOutcome | None = None
    """How the execution's next run really ended, if it did: the outcome of restarting this run."""
    restarts_before: int = 0
    """The execution's automatic restarts stored before the replay starts."""


def _stored_batches(
    sessions: SessionScope, start: dt.datetime, until: dt.datetime, batch_size: int
) -> Iterator[list[_Stored]]:
    """The stored decisions in [start, until] by (created_at, id), ``batch_size`` at a time."""
    after: tuple[dt.datetime, int] | None = None
    while True:
        with sessions() as session:
            batch = _read_batch(session, start, until, after, batch_size)
        if batch:
            yield batch
        if len(batch) < batch_size:
            return
        after = (batch[-1].at, batch[-1].id)


def _read_batch(
    session: Session,
    start: dt.datetime,
    until: dt.datetime,
    after: tuple[dt.datetime, int] | None,
    batch_size: int,
) -> list[_Stored]:
    query = (
        select(
            Decision.id,
            Decision.created_at,
            Decision.origin,
            Decision.action,
            Decision.hosts,
            Decision.excluded_hosts,
            Decision.rule,
            Decision.reason_code,
            Decision.reason,
            Decision.policy_version,
            Decision.run_index,
            Execution.id.label("execution_pk"),
            Execution.execution_id,
            Execution.account_alias,
            Execution.job_id,
            Execution.first_failure_at,
        )
        .join(Execution, Execution.id == Decision.execution_pk)
        .where(Decision.created_at >= start, Decision.created_at <= until)
        .order_by(Decision.created_at, Decision.id)
        .limit(batch_size)
    )
    if after is not None:
        at, last_id = after
        query = query.where(
            or_(Decision.created_at > at, and_(Decision.created_at == at, Decision.id > last_id))
        )
    rows = session.execute(query).all()
    runs = {(row.execution_pk, row.run_index) for row in rows if row.origin == "policy"}
    failures = _host_failures(session, runs)
    statuses = _run_ends(session, runs | {(pk, run + 1) for pk, run in runs})
    descriptions = _job_descriptions(session, {row.job_id for row in rows if row.job_id})
    before = _restarts_before(session, {row.execution_pk for row in rows}, start)
    batch = []
    for row in rows:
        key = (row.execution_pk, row.run_index)
        hosts = failures.get(key, [])
        status, _ = statuses.get(key, ("FAILURE", None))
        next_status, ended_at = statuses.get((row.execution_pk, row.run_index + 1), ("", None))
        outcome = None
        if next_status in FINAL_STATUSES and ended_at is not None:
            outcome = RestartOutcome(ended_at, next_status in FAILED_STATUSES)
        batch.append(
            _Stored(
                id=row.id,
                at=row.created_at,
                origin=row.origin,
                verdict=Verdict(
                    row.action, tuple(row.hosts or ()), row.rule, row.reason_code, row.reason
                ),
                excluded_codes=tuple(str(e.get("code", "")) for e in row.excluded_hosts or ()),
                policy_version=row.policy_version,
                execution_pk=row.execution_pk,
                execution_id=row.execution_id,
                account=row.account_alias,
                job_id=row.job_id,
                first_failure_at=row.first_failure_at,
                run_index=row.run_index,
                # The decision was made on a failed run; a later document cannot make it less so.
                run_status=status if status in FAILED_STATUSES else "FAILURE",
                job_description=descriptions.get(row.job_id),
                failed_hosts=tuple(failure for failure, _ in hosts),
                failure_times=tuple((failure.host, at) for failure, at in hosts),
                next_outcome=outcome,
                restarts_before=before.get(row.execution_pk, 0),
            )
        )
    return batch


def _host_failures(
    session: Session, runs: set[tuple[int, int]]
) -> dict[tuple[int, int], list[tuple[PolicyHostFailure, dt.datetime]]]:
    if not runs:
        return {}
    found: dict[tuple[int, int], list[tuple[PolicyHostFailure, dt.datetime]]] = {}
    rows = session.execute(
        select(
            HostFailure.execution_pk,
            HostFailure.run_index,
            HostFailure.host,
            HostFailure.failure_class,
            HostFailure.message,
            HostFailure.stderr_tail,
            HostFailure.changed,
            HostFailure.occurred_at,
        )
        # By execution, then by run here: a plain IN compiles far faster than a tuple IN.
        .where(HostFailure.execution_pk.in_({pk for pk, _ in runs}))
        .order_by(HostFailure.execution_pk, HostFailure.run_index, HostFailure.host)
    )
    for pk, run, host, failure_class, message, stderr_tail, changed, occurred_at in rows:
        if (pk, run) not in runs:
            continue
        failure = policy_host_failure(host, failure_class, message, stderr_tail, changed)
        found.setdefault((pk, run), []).append((failure, occurred_at))
    return found


def _run_ends(
    session: Session, runs: set[tuple[int, int]]
) -> dict[tuple[int, int], tuple[str, dt.datetime | None]]:
    if not runs:
        return {}
    rows = session.execute(
        select(
            ExecutionRun.execution_pk,
            ExecutionRun.run_index,
            ExecutionRun.status,
            ExecutionRun.ended_at,
        ).where(ExecutionRun.execution_pk.in_({pk for pk, _ in runs}))
    )
    return {
        (pk, run): (status, ended_at) for pk, run, status, ended_at in rows if (pk, run) in runs
    }


def _job_descriptions(session: Session, job_ids: set[str]) -> dict[str, str | None]:
    if not job_ids:
        return {}
    rows = session.execute(select(Job.job_id, Job.description).where(Job.job_id.in_(job_ids)))
    return {job_id: description for job_id, description in rows}


def _restarts_before(session: Session, pks: set[int], start: dt.datetime) -> dict[int, int]:
    """Automatic restarts (not cancelled) of each execution stored before the replay starts."""
    if not pks:
        return {}
    rows = session.execute(
        select(Restart.execution_pk, func.count())
        .where(
            Restart.execution_pk.in_(pks),
            Restart.manual.is_(False),
            Restart.state != "cancelled",
            Restart.created_at < start,
        )
        .group_by(Restart.execution_pk)
    )
    return {pk: count for pk, count in rows}


# --- the simulation -----------------------------------------------------------------------------


@dataclass(slots=True)
class _Track:
    """What the simulation remembers of one execution."""

    prior_restarts: int
    reachable_run: int
    """The highest run that happens under the candidate."""


def _prune(times: deque[dt.datetime], since: dt.datetime) -> int:
    while times and times[0] < since:
        times.popleft()
    return len(times)


def _prune_sorted(times: list[dt.datetime], since: dt.datetime) -> None:
    del times[: bisect.bisect_left(times, since)]


class _Simulation:
    """The candidate's own history: budgets, restart counts, host failures, breaker outcomes."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.per_job: dict[str, deque[dt.datetime]] = {}
        self.per_account: dict[str, deque[dt.datetime]] = {}
        self.global_: deque[dt.datetime] = deque()
        self.host_failures: dict[str, list[dt.datetime]] = {}
        self.outcomes: list[RestartOutcome] = []
        self._outcomes_view: tuple[RestartOutcome, ...] | None = None
        self.executions: dict[int, _Track] = {}

    @property
    def warm_up(self) -> dt.timedelta:
        """How far back a window reaches: replayed before the period so windows start full."""
        limits = self.policy.limits
        spans = [b.window for b in (limits.per_job, limits.per_account, limits.global_) if b]
        if limits.per_host is not None:
            spans.append(limits.per_host.lookback)
        if self.policy.circuit_breaker is not None:
            spans.append(self.policy.circuit_breaker.lookback)
        return max(spans, default=dt.timedelta(0))

    def decide(self, item: _Stored) -> PolicyDecision | None:
        """The candidate's decision on this failed run, or None if the run would not happen."""
        track = self._track(item)
        if item.run_index > track.reachable_run:
            return None
        if self.policy.limits.per_host is not None:
            for host, at in item.failure_times:
                bisect.insort(self.host_failures.setdefault(host, []), at)
        now = item.at
        decision = decide_restart(
            self.policy,
            DecisionInput(
                execution_id=item.execution_id,
                account=item.account,
                job_id=item.job_id,
                job_description=item.job_description,
                status=item.run_status,
                run_index=item.run_index,
                run_count=item.run_index + 1,
                first_failure_at=min(item.first_failure_at or now, now),
                now=now,
                failed_hosts=item.failed_hosts,
                prior_restarts=track.prior_restarts,
                usage=self._usage(item, now),
                host_failure_times=self._host_history(item, now),
                restart_outcomes=self._outcomes(now),
                # Pauses are an operator's doing, not the policy's: paused then, paused now.
                paused=item.verdict.reason
                if item.verdict.reason_code == ReasonCode.PAUSED
                else None,
            ),
        )
        if decision.restart:
            track.prior_restarts += 1
            track.reachable_run = item.run_index + 1
            self._count_restart(item)
            if item.next_outcome is not None and self.policy.circuit_breaker is not None:
                bisect.insort(self.outcomes, item.next_outcome)
                self._outcomes_view = None
        return decision

    def note_manual(self, item: _Stored) -> None:
        """An operator's restart: its run follows, and it may count against the budgets."""
        track = self._track(item)
        if item.verdict.action != "restart" or item.run_index > track.reachable_run:
            return
        track.reachable_run = max(track.reachable_run, item.run_index + 1)
        if self.policy.limits.count_manual:
            self._count_restart(item)

    def sweep(self, now: dt.datetime) -> None:
        """Drop everything every window has left behind, so idle jobs and hosts cost nothing."""
        limits = self.policy.limits
        for budget, windows in (
            (limits.per_job, self.per_job),
            (limits.per_account, self.per_account),
        ):
            if budget is None:
                continue
            for key in [
                k for k, times in windows.items() if not _prune(times, now - budget.window)
            ]:
                del windows[key]
        if limits.global_ is not None:
            _prune(self.global_, now - limits.global_.window)
        if limits.per_host is not None:
            since = now - limits.per_host.lookback
            for host in list(self.host_failures):
                _prune_sorted(self.host_failures[host], since)
                if not self.host_failures[host]:
                    del self.host_failures[host]
        self._outcomes(now)

    def _track(self, item: _Stored) -> _Track:
        track = self.executions.get(item.execution_pk)
        if track is None:
            # First seen: its earlier runs are the record's, before the replay started.
            track = _Track(item.restarts_before, item.run_index)
            self.executions[item.execution_pk] = track
        return track

    def _count_restart(self, item: _Stored) -> None:
        limits = self.policy.limits
        if limits.per_job is not None:
            self.per_job.setdefault(item.job_id, deque()).append(item.at)
        if limits.per_account is not None:
            self.per_account.setdefault(item.account, deque()).append(item.at)
        if limits.global_ is not None:
            self.global_.append(item.at)

    def _usage(self, item: _Stored, now: dt.datetime) -> BudgetUsage:
        limits = self.policy.limits

        def used(times: deque[dt.datetime] | None, window: dt.timedelta) -> int:
            # As app.decisions counts them: restarts created at or after now - window.
            return _prune(times, now - window) if times is not None else 0

        return BudgetUsage(
            per_job=used(self.per_job.get(item.job_id), limits.per_job.window)
            if limits.per_job
            else 0,
            per_account=used(self.per_account.get(item.account), limits.per_account.window)
            if limits.per_account
            else 0,
            global_=used(self.global_, limits.global_.window) if limits.global_ else 0,
        )

    def _host_history(self, item: _Stored, now: dt.datetime) -> dict[str, tuple[dt.datetime, ...]]:
        per_host = self.policy.limits.per_host
        if per_host is None:
            return {}
        since = now - per_host.lookback
        history = {}
        for failure in item.failed_hosts:
            times = self.host_failures.get(failure.host, [])
            _prune_sorted(times, since)
            history[failure.host] = tuple(times[-MAX_HOST_HISTORY:])
        return history

    def _outcomes(self, now: dt.datetime) -> tuple[RestartOutcome, ...]:
        breaker = self.policy.circuit_breaker
        if breaker is None:
            return ()
        since = now - breaker.lookback
        expired = bisect.bisect_left(self.outcomes, since, key=lambda o: o.at)
        if expired or self._outcomes_view is None:
            del self.outcomes[:expired]
            # Outcomes after now (restarts still running then) are ignored by the engine.
            self._outcomes_view = tuple(self.outcomes[-MAX_OUTCOMES:])
        return self._outcomes_view


# --- the comparison -----------------------------------------------------------------------------


@dataclass
class _SideTally:
    restarts: int = 0
    skips: Counter[str] = field(default_factory=Counter)
    trips: Counter[str] = field(default_factory=Counter)
    quarantined_hosts: int = 0
    per_job: Counter[str] = field(default_factory=Counter)
    per_host: Counter[str] = field(default_factory=Counter)

    def add(self, verdict: Verdict, job_id: str, excluded_codes: Iterable[str]) -> None:
        if verdict.action == "restart":
            self.restarts += 1
            self.per_job[job_id] += 1
            self.per_host.update(verdict.hosts or (NO_HOST_LIST,))
        else:
            self.skips[verdict.reason_code] += 1
        if verdict.reason_code in TRIP_CODES:
            self.trips[verdict.reason_code] += 1
        self.quarantined_hosts += sum(code == ReasonCode.QUARANTINE for code in excluded_codes)

    def side(self) -> Side:
        return Side(
            restarts=self.restarts,
            skips=dict(self.skips.most_common()),
            trips=dict(self.trips.most_common()),
            quarantined_hosts=self.quarantined_hosts,
        )


def _verdict(decision: PolicyDecision) -> Verdict:
    return Verdict(
        decision.action, decision.hosts, decision.rule, decision.reason_code, decision.reason
    )


def _top(current: Counter[str], candidate: Counter[str]) -> tuple[Tally, ...]:
    keys = {k for k, _ in current.most_common(TOP)} | {k for k, _ in candidate.most_common(TOP)}
    rows = [Tally(k, current[k], candidate[k]) for k in keys]
    return tuple(sorted(rows, key=lambda t: (-max(t.current, t.candidate), t.key)))


@dataclass
class _Comparison:
    current: _SideTally = field(default_factory=_SideTally)
    candidate: _SideTally = field(default_factory=_SideTally)
    versions: Counter[str] = field(default_factory=Counter)
    failed_runs: int = 0
    not_reached: int = 0
    not_reached_restarted: int = 0
    differ: int = 0
    action_differs: int = 0
    samples: list[Difference] = field(default_factory=list)

    def add(self, item: _Stored, decision: PolicyDecision | None) -> None:
        self.failed_runs += 1
        self.versions[item.policy_version] += 1
        current = item.verdict
        self.current.add(current, item.job_id, item.excluded_codes)
        if decision is None:
            self.not_reached += 1
            self.not_reached_restarted += current.action == "restart"
            return
        candidate = _verdict(decision)
        self.candidate.add(candidate, item.job_id, (e.code for e in decision.excluded_hosts))
        if (current.action, current.hosts, current.rule, current.reason_code) == (
            candidate.action,
            candidate.hosts,
            candidate.rule,
            candidate.reason_code,
        ):
            return
        self.differ += 1
        self.action_differs += current.action != candidate.action
        if len(self.samples) < MAX_SAMPLES:
            self.samples.append(
                Difference(
                    item.at, item.execution_id, item.run_index, item.job_id, current, candidate
                )
            )


def run_backtest(
    sessions: SessionScope,
    candidate: Policy,
    since: dt.datetime,
    until: dt.datetime,
    *,
    batch_size: int = BATCH_SIZE,
) -> BacktestReport:
    """Replay the failures respawn decided in [since, until] under ``candidate``."""
    simulation = _Simulation(candidate)
    start = since - simulation.warm_up
    comparison = _Comparison()
    for batch in _stored_batches(sessions, start, until, batch_size):
        simulation.sweep(batch[0].at)
        for item in batch:
            if item.origin != "policy":
                simulation.note_manual(item)
                continue
            decision = simulation.decide(item)
            if item.at >= since:
                comparison.add(item, decision)
    current, proposed = comparison.current, comparison.candidate
    return BacktestReport(
        candidate_version=candidate.version_hash,
        since=since,
        until=until,
        warm_up_from=start,
        current_versions=dict(comparison.versions.most_common()),
        failed_runs=comparison.failed_runs,
        replayed=comparison.failed_runs - comparison.not_reached,
        not_reached=comparison.not_reached,
        not_reached_restarted=comparison.not_reached_restarted,
        differ=comparison.differ,
        action_differs=comparison.action_differs,
        current=current.side(),
        candidate=proposed.side(),
        per_job=_top(current.per_job, proposed.per_job),
        per_host=_top(current.per_host, proposed.per_host),
        samples=tuple(comparison.samples),
    )
