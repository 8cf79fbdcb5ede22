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
from collections.abc import Iterable
from dataclasses import dataclass, field

from app.core.backtest_history import SessionScope, Stored, Verdict, stored_batches
from app.core.stats import MAX_HOST_HISTORY, MAX_OUTCOMES
from app.policy import (
    BudgetUsage,
    DecisionInput,
    Policy,
    ReasonCode,
    RestartOutcome,
    Sighting,
    decide_restart,
    failure_signature,
)
from app.policy import Decision as PolicyDecision

__all__ = ["BacktestReport", "Difference", "Side", "Tally", "Verdict", "run_backtest"]

GUARD_SKIPS = (ReasonCode.SYSTEMIC, ReasonCode.BLACKOUT)
"""Skips by the systemic conditions and blackouts: with holds, the restarts they save."""

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
    held: int = 0
    """Restarts held while their error signature's breaker was open."""
    deferred: int = 0
    """Restarts deferred to the end of a blackout window."""


@dataclass(frozen=True)
class Tally:
    """Restarts of one job or host under each policy."""

    key: str
    current: int
    candidate: int


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
    saved: int = 0
    """Failures the current policy restarted that the candidate held or skipped as systemic
    or for a blackout: the restarts its round-two guards would have saved."""
    recoveries_kept: int = 0
    """Restarts the current policy made whose next run succeeded, that the candidate makes too."""
    recoveries_lost: int = 0
    """... that the candidate does not make (it skips them, or the run would not happen)."""


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
        self.sightings: dict[str, deque[Sighting]] = {}

    @property
    def warm_up(self) -> dt.timedelta:
        """How far back a window reaches: replayed before the period so windows start full."""
        limits = self.policy.limits
        spans = [b.window for b in (limits.per_job, limits.per_account, limits.global_) if b]
        if limits.per_host is not None:
            spans.append(limits.per_host.lookback)
        if self.policy.circuit_breaker is not None:
            spans.append(self.policy.circuit_breaker.lookback)
        if self.policy.signature_breaker is not None:
            spans.append(self.policy.signature_breaker.lookback)
        return max(spans, default=dt.timedelta(0))

    def decide(self, item: Stored) -> PolicyDecision | None:
        """The candidate's decision on this failed run, or None if the run would not happen."""
        track = self._track(item)
        if item.run_index > track.reachable_run:
            return None
        if self.policy.limits.per_host is not None:
            for host, at in item.failure_times:
                bisect.insort(self.host_failures.setdefault(host, []), at)
        now = item.at
        signature = failure_signature(item.failed_hosts)
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
                run_host_count=item.run_host_count,
                signature=signature,
                signature_sightings=self._sighted(item, signature.key if signature else None),
            ),
        )
        # A held restart goes out once its signature closes (unless its deadline passed by
        # then, which the replay cannot know): its run follows as a restart's would.
        if decision.queued:
            track.prior_restarts += 1
            track.reachable_run = item.run_index + 1
            self._count_restart(item)
            if item.next_outcome is not None and self.policy.circuit_breaker is not None:
                bisect.insort(self.outcomes, item.next_outcome)
                self._outcomes_view = None
        return decision

    def _sighted(self, item: Stored, key: str | None) -> tuple[Sighting, ...]:
        breaker = self.policy.signature_breaker
        if breaker is None or key is None:
            return ()
        seen = self.sightings.setdefault(key, deque())
        seen.append(Sighting(item.at, item.execution_id, item.job_id))
        while seen and seen[0].at < item.at - breaker.lookback:
            seen.popleft()
        return tuple(seen)

    def note_manual(self, item: Stored) -> None:
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
        breaker = self.policy.signature_breaker
        if breaker is not None:
            for key in list(self.sightings):
                seen = self.sightings[key]
                while seen and seen[0].at < now - breaker.lookback:
                    seen.popleft()
                if not seen:
                    del self.sightings[key]
        self._outcomes(now)

    def _track(self, item: Stored) -> _Track:
        track = self.executions.get(item.execution_pk)
        if track is None:
            # First seen: its earlier runs are the record's, before the replay started.
            track = _Track(item.restarts_before, item.run_index)
            self.executions[item.execution_pk] = track
        return track

    def _count_restart(self, item: Stored) -> None:
        limits = self.policy.limits
        if limits.per_job is not None:
            self.per_job.setdefault(item.job_id, deque()).append(item.at)
        if limits.per_account is not None:
            self.per_account.setdefault(item.account, deque()).append(item.at)
        if limits.global_ is not None:
            self.global_.append(item.at)

    def _usage(self, item: Stored, now: dt.datetime) -> BudgetUsage:
        limits = self.policy.limits

        def used(times: deque[dt.datetime] | None, window: dt.timedelta) -> int:
            # As app.core.stats counts them: restarts created at or after now - window.
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

    def _host_history(self, item: Stored, now: dt.datetime) -> dict[str, tuple[dt.datetime, ...]]:
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
    held: int = 0
    deferred: int = 0
    per_job: Counter[str] = field(default_factory=Counter)
    per_host: Counter[str] = field(default_factory=Counter)

    def add(self, verdict: Verdict, job_id: str, excluded_codes: Iterable[str]) -> None:
        if verdict.action == "restart":
            self.restarts += 1
            self.per_job[job_id] += 1
            self.per_host.update(verdict.hosts or (NO_HOST_LIST,))
        elif verdict.action == "held":
            self.held += 1
        else:
            self.skips[verdict.reason_code] += 1
        self.deferred += verdict.deferred_by is not None
        if verdict.reason_code in TRIP_CODES:
            self.trips[verdict.reason_code] += 1
        self.quarantined_hosts += sum(code == ReasonCode.QUARANTINE for code in excluded_codes)

    def side(self) -> Side:
        return Side(
            restarts=self.restarts,
            skips=dict(self.skips.most_common()),
            trips=dict(self.trips.most_common()),
            quarantined_hosts=self.quarantined_hosts,
            held=self.held,
            deferred=self.deferred,
        )


def _verdict(decision: PolicyDecision) -> Verdict:
    return Verdict(
        decision.action,
        decision.hosts,
        decision.rule,
        decision.reason_code,
        decision.reason,
        decision.deferred_by,
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
    saved: int = 0
    kept: int = 0
    lost: int = 0
    samples: list[Difference] = field(default_factory=list)

    def add(self, item: Stored, decision: PolicyDecision | None) -> None:
        self.failed_runs += 1
        self.versions[item.policy_version] += 1
        current = item.verdict
        self.current.add(current, item.job_id, item.excluded_codes)
        outcome = item.next_outcome
        if current.action == "restart" and outcome is not None and not outcome.failed_again:
            if decision is not None and decision.queued:
                self.kept += 1
            else:
                self.lost += 1
        if decision is None:
            self.not_reached += 1
            self.not_reached_restarted += current.action == "restart"
            return
        candidate = _verdict(decision)
        self.candidate.add(candidate, item.job_id, (e.code for e in decision.excluded_hosts))
        if current.action == "restart" and (
            candidate.action == "held" or candidate.reason_code in GUARD_SKIPS
        ):
            self.saved += 1
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
    for batch in stored_batches(sessions, start, until, batch_size):
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
        saved=comparison.saved,
        recoveries_kept=comparison.kept,
        recoveries_lost=comparison.lost,
    )
