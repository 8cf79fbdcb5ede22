"""Counts and series over the stored record, each query written once.

The decision code reads budgets, host history, breaker outcomes and pauses here; the admin UI
and the API read the same functions for what they show (the overview's figures and chart,
budget use, the breaker, quarantined hosts, the dispatcher's backlog), so what a page says is
what the policy saw.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Select, bindparam, case, func, select
from sqlalchemy.orm import Session

from app.models import (
    ACTIVE_RESTART_STATES,
    BUDGET_RESTART_STATES,
    AuditEntry,
    Decision,
    Execution,
    HostFailure,
    Job,
    Pause,
    Restart,
    RestartState,
)
from app.policy import (
    BreakerState,
    BudgetUsage,
    HostLimit,
    Policy,
    RestartOutcome,
    breaker_state,
    format_duration,
)

CHART_HOURS = 24
MAX_HOST_HISTORY = 500
MAX_OUTCOMES = 5000
MAX_SIGHTINGS = 5000
MAX_QUARANTINE_ROWS = 20_000
TOP_BUDGET_USERS = 5


def as_utc(value: Any) -> dt.datetime:
    """A moment as the database returns it (text from some SQLite aggregates), made aware."""
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    if not isinstance(value, dt.datetime):
        raise TypeError(f"expected a datetime from the database, got {type(value).__name__}")
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


# --- budgets --------------------------------------------------------------------------------


def counted_restarts(
    since: dt.datetime | ColumnElement[Any],
) -> tuple[ColumnElement[bool], ...]:
    """What a budget counts: restarts queued or sent since `since` that count against it
    (manual restarts only with `limits.count_manual`; cancelled ones never)."""
    return (
        Restart.created_at >= since,
        Restart.counts_against_budget.is_(True),
        Restart.state.in_(BUDGET_RESTART_STATES),
    )


def budget_query(
    since: dt.datetime | ColumnElement[Any],
    job_id: str | ColumnElement[Any] | None = None,
    account: str | ColumnElement[Any] | None = None,
) -> Select[Any]:
    """The count of restarts against a budget since `since`, for one job, one account or
    all (values, or bound parameters of a statement built once)."""
    query = select(func.count()).select_from(Restart).where(*counted_restarts(since))
    if job_id is not None or account is not None:
        query = query.join(Execution, Execution.id == Restart.execution_pk)
        if job_id is not None:
            query = query.where(Execution.job_id == job_id)
        if account is not None:
            query = query.where(Execution.account_alias == account)
    return query


def budget_count(
    session: Session, since: dt.datetime, job_id: str | None = None, account: str | None = None
) -> int:
    """Restarts counted against a budget since `since`, for one job, one account or all."""
    return session.scalar(budget_query(since, job_id, account)) or 0


def budget_usage(
    session: Session, policy: Policy, execution: Execution, now: dt.datetime
) -> BudgetUsage:
    """How much of each budget the execution's job, account and the fleet have used (a
    decision reads the same counts along with its other inputs: `budget_queries`)."""
    values = budget_parameters(policy, execution, now)
    return budget_usage_of(
        None if query is None else session.scalar(query, values)
        for query in budget_queries(budget_scopes(policy))
    )


def budget_usage_of(counts: Iterable[int | None]) -> BudgetUsage:
    """`BudgetUsage` from the counts of `budget_queries`, in its order (None: no limit)."""
    per_job, per_account, fleet = (count or 0 for count in counts)
    return BudgetUsage(per_job=per_job, per_account=per_account, global_=fleet)


BudgetScopes = tuple[bool, bool, bool]
"""Whether the policy limits restarts per job, per account and fleet-wide."""


def budget_scopes(policy: Policy) -> BudgetScopes:
    limits = policy.limits
    return (limits.per_job is not None, limits.per_account is not None, limits.global_ is not None)


@functools.cache
def budget_queries(scopes: BudgetScopes) -> tuple[Select[Any] | None, ...]:
    """The counts of an execution's job, account and fleet budgets (None where the policy
    sets no limit), in `BudgetUsage` order, their inputs bound by `budget_parameters`: built
    once, to be read alone or in one statement with others (a decision)."""
    per_job, per_account, fleet = scopes
    return (
        budget_query(bindparam("budget_job_since"), job_id=bindparam("budget_job"))
        if per_job
        else None,
        budget_query(bindparam("budget_account_since"), account=bindparam("budget_account"))
        if per_account
        else None,
        budget_query(bindparam("budget_global_since")) if fleet else None,
    )


def budget_parameters(policy: Policy, execution: Execution, now: dt.datetime) -> dict[str, Any]:
    """The values `budget_queries` reads for this execution's budgets."""
    limits = policy.limits
    values: dict[str, Any] = {}
    if limits.per_job is not None:
        values |= {"budget_job_since": now - limits.per_job.window, "budget_job": execution.job_id}
    if limits.per_account is not None:
        values |= {
            "budget_account_since": now - limits.per_account.window,
            "budget_account": execution.account_alias,
        }
    if limits.global_ is not None:
        values["budget_global_since"] = now - limits.global_.window
    return values


@dataclass(frozen=True)
class BudgetLine:
    scope: str
    """"global", "job" or "account"."""
    name: str
    used: int
    limit: int
    window: str

    @property
    def label(self) -> str:
        return self.name if self.scope == "global" else f"{self.scope} {self.name}"

    @property
    def percent(self) -> int:
        return min(100, round(100 * self.used / self.limit)) if self.limit else 100

    @property
    def level(self) -> str:
        if self.used >= self.limit:
            return "full"
        return "high" if self.percent >= 80 else "ok"


def budget_lines(session: Session, policy: Policy, now: dt.datetime) -> list[BudgetLine]:
    """Budget use as `budget_usage` counts it: the global budget, the busiest jobs and
    accounts."""
    limits = policy.limits
    lines: list[BudgetLine] = []
    if limits.global_ is not None:
        total = budget_count(session, now - limits.global_.window)
        window = format_duration(limits.global_.window)
        lines.append(BudgetLine("global", "all jobs", total, limits.global_.restarts, window))
    for budget, column, what in (
        (limits.per_job, Execution.job_id, "job"),
        (limits.per_account, Execution.account_alias, "account"),
    ):
        if budget is None:
            continue
        count = func.count(Restart.id)
        rows = session.execute(
            select(column, count)
            .join(Execution, Execution.id == Restart.execution_pk)
            .where(*counted_restarts(now - budget.window))
            .group_by(column)
            .order_by(count.desc(), column)
            .limit(TOP_BUDGET_USERS)
        )
        window = format_duration(budget.window)
        used = list(rows)
        names = {name: name or "(none)" for name, _ in used}
        if what == "job" and used:
            # Operators know jobs by their description; the id stays for the unknown ones.
            for job_id, description in job_descriptions(session, list(names)).items():
                if description:
                    names[job_id] = f"{description} ({job_id[:8]})"
        found = [BudgetLine(what, names[name], n, budget.restarts, window) for name, n in used]
        # An unnamed line stands for "nothing used yet" and still shows the limit.
        lines.extend(found or [BudgetLine(what, "", 0, budget.restarts, window)])
    return lines


def job_descriptions(session: Session, job_ids: Sequence[str]) -> dict[str, str | None]:
    """The fetched descriptions of these jobs (jobs not fetched yet are left out)."""
    if not job_ids:
        return {}
    return dict(
        session.execute(select(Job.job_id, Job.description).where(Job.job_id.in_(job_ids))).all()
    )


# --- hosts ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class QuarantinedHost:
    host: str
    until: dt.datetime
    failures: int


def quarantined_hosts(
    session: Session, limit: HostLimit | None, now: dt.datetime
) -> list[QuarantinedHost]:
    """Hosts the per-host limit leaves out of restarts right now, soonest release first.

    The engine's rule (`quarantined_until`): a failure at t that makes `failures` failures
    inside (t - window, t] holds the host until t + quarantine. So only failures of the last
    `quarantine` can hold a host now, and for each one it is enough to know the time of the
    failure `failures - 1` places before it, which a window function gives in one query.
    """
    if limit is None:
        return []
    since = now - limit.lookback
    in_range = (HostFailure.occurred_at > since, HostFailure.occurred_at <= now)
    candidates = (
        select(
            HostFailure.host.label("host"),
            func.count(case((HostFailure.occurred_at > now - limit.window, 1))).label("recent"),
        )
        .where(*in_range)
        .group_by(HostFailure.host)
        .having(func.count() >= limit.failures)
        .cte("candidates")
    )
    lagged = (
        select(
            HostFailure.host.label("host"),
            HostFailure.occurred_at.label("at"),
            func.lag(HostFailure.occurred_at, limit.failures - 1)
            .over(partition_by=HostFailure.host, order_by=HostFailure.occurred_at)
            .label("earlier"),
        )
        .where(*in_range, HostFailure.host.in_(select(candidates.c.host)))
        .subquery()
    )
    rows = session.execute(
        select(lagged.c.host, lagged.c.at, lagged.c.earlier, candidates.c.recent)
        .join(candidates, candidates.c.host == lagged.c.host)
        .where(lagged.c.at > now - limit.quarantine)
        .limit(MAX_QUARANTINE_ROWS)
    )
    held: dict[str, QuarantinedHost] = {}
    for host, at, earlier, recent in rows:
        moment, before = as_utc(at), as_utc(earlier) if earlier is not None else None
        if before is None or before <= moment - limit.window:
            continue
        until = moment + limit.quarantine
        if host not in held or held[host].until < until:
            held[host] = QuarantinedHost(host, until, int(recent))
    return sorted(held.values(), key=lambda q: (q.until, q.host))


# --- the circuit breaker --------------------------------------------------------------------


def restart_outcomes(
    session: Session, policy: Policy, now: dt.datetime
) -> tuple[RestartOutcome, ...]:
    """Recent finished automatic restarts, oldest first: the circuit breaker's input."""
    breaker = policy.circuit_breaker
    if breaker is None:
        return ()
    since = now - (breaker.window + breaker.cool_down)
    rows = session.execute(
        select(Restart.result_at, Restart.result)
        .where(
            Restart.manual.is_(False),
            Restart.result.is_not(None),
            Restart.result_at >= since,
        )
        .order_by(Restart.result_at.desc())
        .limit(MAX_OUTCOMES)
    )
    return tuple(sorted(RestartOutcome(at, result == "failed_again") for at, result in rows if at))


@dataclass(frozen=True)
class BreakerView:
    state: BreakerState
    window: str
    cool_down: str
    min_restarts: int
    failure_ratio: float


def breaker_view(session: Session, policy: Policy, now: dt.datetime) -> BreakerView | None:
    """The circuit breaker as the decisions see it: finished automatic restarts."""
    breaker = policy.circuit_breaker
    if breaker is None:
        return None
    outcomes = restart_outcomes(session, policy, now)
    return BreakerView(
        state=breaker_state(breaker, outcomes, now),
        window=format_duration(breaker.window),
        cool_down=format_duration(breaker.cool_down),
        min_restarts=breaker.min_restarts,
        failure_ratio=breaker.failure_ratio,
    )


# --- pauses ---------------------------------------------------------------------------------


def list_pauses(session: Session) -> list[Pause]:
    """Every pause, the global one (job "") first."""
    return list(session.scalars(select(Pause).order_by(Pause.job_id)))


def pauses_for(session: Session, job_id: str | None) -> dict[str, Pause]:
    """The global pause (key "") and the job's own, those that exist."""
    keys = ("", job_id) if job_id else ("",)
    return {p.job_id: p for p in session.scalars(select(Pause).where(Pause.job_id.in_(keys)))}


def pause_of(session: Session, job_id: str | None) -> Pause | None:
    """The pause of one job, or the global pause when job_id is None."""
    return session.scalars(select(Pause).where(Pause.job_id == (job_id or ""))).one_or_none()


def pause_reason(session: Session, job_id: str) -> str | None:
    """Why automatic restarts of the job are paused, or None when they are not."""
    values = pause_parameters(job_id)
    return pause_message(*(session.scalar(query, values) for query in PAUSE_QUERIES))


PAUSE_QUERIES = (
    select(Pause.paused_by).where(Pause.job_id == ""),
    select(Pause.paused_by).where(Pause.job_id == bindparam("pause_job")),
)
"""Who paused every job, and who paused one (no row: not paused), for `pause_message`, the
job bound by `pause_parameters`; a decision reads them along with its other inputs."""


def pause_parameters(job_id: str) -> dict[str, Any]:
    return {"pause_job": job_id or None}  # no job id: no pause of its own


def pause_message(global_by: str | None, job_by: str | None) -> str | None:
    """Why automatic restarts are paused, from who paused them all and who paused the job."""
    if global_by is not None:
        return f"automatic restarts paused globally by {global_by}"
    if job_by is not None:
        return f"automatic restarts paused for this job by {job_by}"
    return None


# --- the dispatcher -------------------------------------------------------------------------


@dataclass(frozen=True)
class Backlog:
    pending: int
    in_flight: int
    overdue: int
    oldest_due: dt.datetime | None
    held: int = 0
    """Queued but not due while their error signature's breaker is open."""

    @property
    def total(self) -> int:
        return self.pending + self.in_flight


def dispatcher_backlog(session: Session, now: dt.datetime) -> Backlog:
    """Restarts waiting to be sent or being sent, and how late the oldest one is."""
    counts = {RestartState.PENDING: 0, RestartState.HELD: 0, RestartState.IN_FLIGHT: 0}
    oldest: dt.datetime | None = None
    overdue = 0
    for state, count, first_due, late in session.execute(
        select(
            Restart.state,
            func.count(),
            func.min(Restart.due_at),
            func.count(case((Restart.due_at <= now, 1))),
        )
        .where(Restart.state.in_(ACTIVE_RESTART_STATES))
        .group_by(Restart.state)
    ):
        counts[RestartState(state)] = count
        if state == RestartState.PENDING:
            overdue = int(late or 0)
            if first_due is not None:
                oldest = as_utc(first_due)
    return Backlog(
        counts[RestartState.PENDING],
        counts[RestartState.IN_FLIGHT],
        overdue,
        oldest,
        counts[RestartState.HELD],
    )


def active_restarts(session: Session, execution_pks: Sequence[int]) -> dict[int, str]:
    """For each execution with a restart under way: "pending" or "in_flight"."""
    active: dict[int, str] = {}
    if not execution_pks:
        return active
    for pk, state in session.execute(
        select(Restart.execution_pk, Restart.state).where(
            Restart.execution_pk.in_(execution_pks),
            Restart.state.in_(ACTIVE_RESTART_STATES),
        )
    ):
        # in_flight says more than pending when, oddly, both exist.
        if active.get(pk) != RestartState.IN_FLIGHT:
            active[pk] = state
    return active


# --- the last 24 hours ----------------------------------------------------------------------


@dataclass(frozen=True)
class SuccessRate:
    succeeded: int
    failed_again: int

    @property
    def finished(self) -> int:
        return self.succeeded + self.failed_again

    @property
    def percent(self) -> int | None:
        if not self.finished:
            return None
        return round(100 * self.succeeded / self.finished)


def success_rate(session: Session, since: dt.datetime) -> SuccessRate:
    """How the runs started by restarts sent since `since` ended."""
    row = session.execute(
        select(
            func.count(case((Restart.result == "succeeded", 1))),
            func.count(case((Restart.result == "failed_again", 1))),
        ).where(Restart.sent_at >= since, Restart.result.is_not(None))
    ).one()
    return SuccessRate(int(row[0] or 0), int(row[1] or 0))


def failures_decided(session: Session, since: dt.datetime) -> int:
    """Failed runs the policy decided since `since`."""
    query = (
        select(func.count())
        .select_from(Decision)
        .where(Decision.origin == "policy", Decision.created_at >= since)
    )
    return session.scalar(query) or 0


def restarts_sent(session: Session, since: dt.datetime) -> int:
    query = select(func.count()).select_from(Restart).where(Restart.sent_at >= since)
    return session.scalar(query) or 0


@dataclass(frozen=True)
class HourBucket:
    start: dt.datetime
    failures: int
    restarts: int


def chart_start(now: dt.datetime) -> dt.datetime:
    """Start of the 24 hourly buckets: the current hour and the 23 before it."""
    hour = now.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)
    return hour - dt.timedelta(hours=CHART_HOURS - 1)


def _hour_of(session: Session, column: Any) -> ColumnElement[Any]:
    if session.get_bind().dialect.name == "postgresql":
        return func.date_trunc("hour", func.timezone("UTC", column))
    return func.strftime("%Y-%m-%d %H:00:00", column)


def _hourly(
    session: Session, column: Any, since: dt.datetime, *where: Any
) -> dict[dt.datetime, int]:
    hour = _hour_of(session, column).label("hour")
    query: Select[Any] = select(hour, func.count()).where(column >= since, *where).group_by(hour)
    return {as_utc(h): n for h, n in session.execute(query) if h is not None}


def hourly_buckets(session: Session, now: dt.datetime) -> list[HourBucket]:
    """Failures decided and restarts sent per hour, the last 24 hours."""
    since = chart_start(now)
    failures = _hourly(session, Decision.created_at, since, Decision.origin == "policy")
    restarts = _hourly(session, Restart.sent_at, since)
    hours = [since + dt.timedelta(hours=n) for n in range(CHART_HOURS)]
    return [HourBucket(h, failures.get(h, 0), restarts.get(h, 0)) for h in hours]


def recent_actions(session: Session, limit: int = 10) -> list[AuditEntry]:
    """The latest operator actions; plain sign-ins are left out (lockouts are kept)."""
    return list(
        session.scalars(
            select(AuditEntry)
            .where(AuditEntry.action != "login")
            .order_by(AuditEntry.id.desc())
            .limit(limit)
        )
    )
