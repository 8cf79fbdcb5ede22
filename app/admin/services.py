"""What the admin pages show, built with a fixed number of queries per page.

The shared read queries (`app.queries`) and decision helpers (`app.decisions`) do the heavy
lifting; this module batches what the templates loop over and adds the UI-only aggregations:
the 24-hour overview, budget usage, the breaker, quarantined hosts and the dispatcher backlog.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from sqlalchemy import ColumnElement, Select, case, func, select
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash

from app.controls import record_audit
from app.decisions import (
    ACTIVE_RESTART_STATES,
    counted_restarts,
    decision_input,
    restart_outcomes,
)
from app.documents import FAILED_STATUSES, FINAL_STATUSES
from app.errors import NotFound
from app.models import (
    AuditEntry,
    Decision,
    Event,
    Execution,
    ExecutionRun,
    HostFailure,
    Job,
    Pause,
    Restart,
    User,
)
from app.policy import (
    BreakerState,
    Explanation,
    HostLimit,
    Policy,
    Rule,
    Settings,
    breaker_state,
    explain_decision,
    format_duration,
)
from app.policy_source import LoadedPolicy, PolicyLoadError
from app.queries import (
    ExecutionDetail,
    ExecutionFilters,
    Page,
    count_by_status,
    execution_detail,
    get_execution,
    list_events,
    list_executions,
)
from app.redact import redact

CHART_HOURS = 24
MAX_QUARANTINE_ROWS = 20_000
TOP_BUDGET_USERS = 5


# --- people -------------------------------------------------------------------------------


@dataclass(frozen=True)
class AdminUser:
    """The logged-in operator as Flask-Login sees it (not an ORM object: nothing lazy-loads)."""

    id: int
    name: str
    role: str
    fingerprint: str

    is_authenticated = True
    is_active = True
    is_anonymous = False

    @property
    def is_operator(self) -> bool:
        return self.role == "operator"

    def get_id(self) -> str:
        # The password fingerprint logs out every session of a user whose password changed.
        return f"{self.id}:{self.fingerprint}"


def _fingerprint(user: User) -> str:
    return hashlib.sha256(user.password_hash.encode()).hexdigest()[:16]


def _admin_user(user: User) -> AdminUser:
    return AdminUser(user.id, user.name, user.role, _fingerprint(user))


def load_user(session: Session, session_id: str) -> AdminUser | None:
    """The user a session cookie names, if it still exists with the same password."""
    raw_id, _, fingerprint = session_id.partition(":")
    if not raw_id.isdigit():
        return None
    user = session.get(User, int(raw_id))
    if user is None or not hmac.compare_digest(_fingerprint(user), fingerprint):
        return None
    return _admin_user(user)


@dataclass(frozen=True)
class LoginResult:
    user: AdminUser | None
    locked_seconds: int = 0
    """When the account is locked: how many seconds are left."""


@cache
def _dummy_hash() -> str:
    # Checked against for unknown names so a wrong name costs as long as a wrong password.
    return generate_password_hash("respawn-no-such-user")


class AddressThrottle:
    """Failed logins per client address over a sliding window, in this process's memory.

    The per-user lock stops guessing one account's password; this stops one address from
    trying many user names. Per process: with N workers an address gets up to N times the
    limit, which still bounds a spray.
    """

    MAX_ADDRESSES = 10_000

    def __init__(self, limit: int, window: float, clock: Callable[[], float] = time.monotonic):
        self.limit = limit
        self.window = window
        self.clock = clock
        self._lock = threading.Lock()
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, address: str, now: float) -> deque[float]:
        times = self._failures.setdefault(address, deque())
        while times and times[0] <= now - self.window:
            times.popleft()
        return times

    def wait_seconds(self, address: str) -> float:
        """How long this address must wait before trying again (0: go ahead)."""
        now = self.clock()
        with self._lock:
            times = self._recent(address, now)
            if len(times) < self.limit:
                return 0.0
            return max(0.0, times[0] + self.window - now)

    def failed(self, address: str) -> None:
        now = self.clock()
        with self._lock:
            if len(self._failures) >= self.MAX_ADDRESSES and address not in self._failures:
                # Forget the quietest addresses rather than grow without bound.
                for key in [k for k, v in self._failures.items() if not self._recent(k, now)]:
                    del self._failures[key]
                if len(self._failures) >= self.MAX_ADDRESSES:
                    self._failures.pop(next(iter(self._failures)))
            self._recent(address, now).append(now)

    def succeeded(self, address: str) -> None:
        with self._lock:
            self._failures.pop(address, None)


def sign_in(
    session: Session,
    name: str,
    password: str,
    now: dt.datetime,
    max_failures: int,
    lock_seconds: float,
) -> LoginResult:
    """`authenticate`, with sign-ins and refusals of a locked account in the audit log."""
    result = authenticate(session, name, password, now, max_failures, lock_seconds)
    if result.user is not None:
        record_audit(session, result.user.name, "login", "admin ui", now)
    elif result.locked_seconds:
        record_audit(session, name[:128], "login_locked", "admin ui", now)
    return result


def authenticate(
    session: Session,
    name: str,
    password: str,
    now: dt.datetime,
    max_failures: int,
    lock_seconds: float,
) -> LoginResult:
    """Check a login; count failures and lock the account after `max_failures` in a row.

    Each failure past the limit locks the account again, for twice as long (up to 64 times
    `lock_seconds`). A locked account is refused without looking at the password.
    """
    user = session.scalars(select(User).where(User.name == name)).one_or_none()
    if user is None:
        check_password_hash(_dummy_hash(), password)
        return LoginResult(None)
    if user.locked_until is not None and user.locked_until > now:
        return LoginResult(None, _seconds_left(user.locked_until, now))
    if check_password_hash(user.password_hash, password):
        user.failed_logins = 0
        user.locked_until = None
        return LoginResult(_admin_user(user))
    user.failed_logins = (user.failed_logins or 0) + 1
    if user.failed_logins >= max_failures:
        doublings = min(user.failed_logins - max_failures, 6)
        user.locked_until = now + dt.timedelta(seconds=lock_seconds * 2**doublings)
        return LoginResult(None, _seconds_left(user.locked_until, now))
    return LoginResult(None)


def _seconds_left(until: dt.datetime, now: dt.datetime) -> int:
    return max(1, int((until - now).total_seconds() + 0.999))


# --- formatting helpers shared with the templates -------------------------------------------


def human_duration(seconds: float | None) -> str:
    """`850 ms`, `4.2 s`, `3 min 05 s`, `2 h 07 min`, `3 d 4 h`."""
    if seconds is None:
        return "—"
    if seconds < 0:
        seconds = 0
    if seconds < 1:
        return f"{round(seconds * 1000)} ms"
    if seconds < 10:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        minutes, secs = divmod(whole, 60)
        return f"{minutes} min {secs:02d} s"
    if whole < 86400:
        hours, rest = divmod(whole, 3600)
        return f"{hours} h {rest // 60:02d} min"
    days, rest = divmod(whole, 86400)
    return f"{days} d {rest // 3600} h"


def relative_time(moment: dt.datetime | None, now: dt.datetime) -> str:
    if moment is None:
        return "—"
    delta = (now - moment).total_seconds()
    if abs(delta) < 5:
        return "just now"
    text = human_duration(abs(delta)).replace(" 0", " ")
    # Keep it short: the most significant unit only.
    first = " ".join(text.split(" ")[:2])
    return f"{first} ago" if delta > 0 else f"in {first}"


# --- the executions list ------------------------------------------------------------------


@dataclass(frozen=True)
class ExecutionRow:
    execution: Execution
    job_description: str | None
    active_restart: str | None
    """"pending" or "in_flight" when a restart of this execution is under way."""


@dataclass(frozen=True)
class Backlog:
    pending: int
    in_flight: int
    overdue: int
    oldest_due: dt.datetime | None

    @property
    def total(self) -> int:
        return self.pending + self.in_flight


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


@dataclass(frozen=True)
class QuarantinedHost:
    host: str
    until: dt.datetime
    failures: int


@dataclass(frozen=True)
class Summary:
    """The overview figures shown above the executions list."""

    failures: int
    restarts: int
    success: SuccessRate
    quarantined: list[QuarantinedHost]
    backlog: Backlog
    paused_globally: Pause | None


@dataclass(frozen=True)
class ExecutionList:
    rows: list[ExecutionRow]
    next_cursor: str | None
    counts: dict[str, int]
    summary: Summary

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def execution_list(
    session: Session,
    policy: Policy,
    filters: ExecutionFilters,
    limit: int,
    cursor: str | None,
    now: dt.datetime,
) -> ExecutionList:
    page = list_executions(session, filters, limit, cursor)
    executions: list[Execution] = page.items
    job_ids = {e.job_id for e in executions if e.job_id}
    descriptions: dict[str, str | None] = {}
    if job_ids:
        descriptions = dict(
            session.execute(
                select(Job.job_id, Job.description).where(Job.job_id.in_(job_ids))
            ).all()
        )
    active: dict[int, str] = {}
    if executions:
        for pk, state in session.execute(
            select(Restart.execution_pk, Restart.state).where(
                Restart.execution_pk.in_([e.id for e in executions]),
                Restart.state.in_(ACTIVE_RESTART_STATES),
            )
        ):
            # in_flight says more than pending when, oddly, both exist.
            if active.get(pk) != "in_flight":
                active[pk] = state
    rows = [ExecutionRow(e, descriptions.get(e.job_id), active.get(e.id)) for e in executions]
    return ExecutionList(
        rows=rows,
        next_cursor=page.next_cursor,
        counts=count_by_status(session, filters),
        summary=summary(session, policy, now),
    )


def summary(session: Session, policy: Policy, now: dt.datetime) -> Summary:
    since = chart_start(now)
    failures = (
        session.scalar(
            select(func.count())
            .select_from(Decision)
            .where(Decision.origin == "policy", Decision.created_at >= since)
        )
        or 0
    )
    restarts = (
        session.scalar(select(func.count()).select_from(Restart).where(Restart.sent_at >= since))
        or 0
    )
    return Summary(
        failures=failures,
        restarts=restarts,
        success=success_rate(session, since),
        quarantined=quarantined_hosts(session, policy.limits.per_host, now),
        backlog=dispatcher_backlog(session, now),
        paused_globally=session.scalars(select(Pause).where(Pause.job_id == "")).one_or_none(),
    )


# --- the overview -------------------------------------------------------------------------


@dataclass(frozen=True)
class HourBucket:
    start: dt.datetime
    failures: int
    restarts: int


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


@dataclass(frozen=True)
class BreakerView:
    state: BreakerState
    window: str
    cool_down: str
    min_restarts: int
    failure_ratio: float


@dataclass(frozen=True)
class Overview:
    now: dt.datetime
    since: dt.datetime
    buckets: list[HourBucket]
    summary: Summary
    budgets: list[BudgetLine]
    breaker: BreakerView | None
    pauses: list[Pause]
    recent_actions: list[AuditEntry]

    @property
    def empty(self) -> bool:
        return not any(b.failures or b.restarts for b in self.buckets)

    @property
    def peak(self) -> int:
        return max([1, *(max(b.failures, b.restarts) for b in self.buckets)])


def chart_start(now: dt.datetime) -> dt.datetime:
    """Start of the 24 hourly buckets: the current hour and the 23 before it."""
    hour = now.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)
    return hour - dt.timedelta(hours=CHART_HOURS - 1)


def _hour_of(session: Session, column: Any) -> ColumnElement[Any]:
    if session.get_bind().dialect.name == "postgresql":
        return func.date_trunc("hour", func.timezone("UTC", column))
    return func.strftime("%Y-%m-%d %H:00:00", column)


def _as_hour(value: Any) -> dt.datetime:
    """An hour bucket as the database returns it (text from SQLite), as an aware datetime."""
    return _as_utc(value)


def _hourly(
    session: Session, column: Any, since: dt.datetime, *where: Any
) -> dict[dt.datetime, int]:
    hour = _hour_of(session, column).label("hour")
    query: Select[Any] = select(hour, func.count()).where(column >= since, *where).group_by(hour)
    return {_as_hour(h): n for h, n in session.execute(query) if h is not None}


def hourly_buckets(session: Session, now: dt.datetime) -> list[HourBucket]:
    since = chart_start(now)
    failures = _hourly(session, Decision.created_at, since, Decision.origin == "policy")
    restarts = _hourly(session, Restart.sent_at, since)
    hours = [since + dt.timedelta(hours=n) for n in range(CHART_HOURS)]
    return [HourBucket(h, failures.get(h, 0), restarts.get(h, 0)) for h in hours]


def success_rate(session: Session, since: dt.datetime) -> SuccessRate:
    row = session.execute(
        select(
            func.count(case((Restart.result == "succeeded", 1))),
            func.count(case((Restart.result == "failed_again", 1))),
        ).where(Restart.sent_at >= since, Restart.result.is_not(None))
    ).one()
    return SuccessRate(int(row[0] or 0), int(row[1] or 0))


def dispatcher_backlog(session: Session, now: dt.datetime) -> Backlog:
    counts = {"pending": 0, "in_flight": 0}
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
        counts[state] = count
        if state == "pending":
            overdue = int(late or 0)
            if first_due is not None:
                oldest = _as_utc(first_due)
    return Backlog(counts["pending"], counts["in_flight"], overdue, oldest)


def _as_utc(value: Any) -> dt.datetime:
    if isinstance(value, str):  # SQLite hands back text from strftime and some aggregates
        value = dt.datetime.fromisoformat(value)
    if not isinstance(value, dt.datetime):
        raise TypeError(f"expected a datetime from the database, got {type(value).__name__}")
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


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
        moment, before = _as_utc(at), _as_utc(earlier) if earlier is not None else None
        if before is None or before <= moment - limit.window:
            continue
        until = moment + limit.quarantine
        if host not in held or held[host].until < until:
            held[host] = QuarantinedHost(host, until, int(recent))
    return sorted(held.values(), key=lambda q: (q.until, q.host))


def _restart_count(session: Session, since: dt.datetime) -> Select[Any]:
    return select(func.count()).select_from(Restart).where(*counted_restarts(since))


def budget_lines(session: Session, policy: Policy, now: dt.datetime) -> list[BudgetLine]:
    """Budget use counted as `app.decisions.budget_usage` counts it: global, busiest jobs and
    accounts."""
    limits = policy.limits
    lines: list[BudgetLine] = []
    if limits.global_ is not None:
        used = session.scalar(_restart_count(session, now - limits.global_.window)) or 0
        window = format_duration(limits.global_.window)
        lines.append(BudgetLine("global", "all jobs", used, limits.global_.restarts, window))
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
            for job_id, description in session.execute(
                select(Job.job_id, Job.description).where(Job.job_id.in_(list(names)))
            ):
                if description:
                    names[job_id] = f"{description} ({job_id[:8]})"
        found = [BudgetLine(what, names[name], n, budget.restarts, window) for name, n in used]
        # An unnamed line stands for "nothing used yet" and still shows the limit.
        lines.extend(found or [BudgetLine(what, "", 0, budget.restarts, window)])
    return lines


def breaker_view(session: Session, policy: Policy, now: dt.datetime) -> BreakerView | None:
    """The circuit breaker as `app.decisions` feeds it: finished automatic restarts."""
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


def pauses(session: Session) -> list[Pause]:
    return list(session.scalars(select(Pause).order_by(Pause.job_id)))


def overview(session: Session, policy: Policy, now: dt.datetime) -> Overview:
    return Overview(
        now=now,
        since=chart_start(now),
        buckets=hourly_buckets(session, now),
        summary=summary(session, policy, now),
        budgets=budget_lines(session, policy, now),
        breaker=breaker_view(session, policy, now),
        pauses=pauses(session),
        recent_actions=recent_actions(session),
    )


# --- one execution ------------------------------------------------------------------------


@dataclass(frozen=True)
class TimelineBar:
    run_index: int
    status: str
    started_at: dt.datetime | None
    ended_at: dt.datetime | None
    seconds: float | None
    ongoing: bool
    derived: bool
    """Some of its times come from status events only, not from the Runner's timers."""
    x: float = 0.0
    width: float = 0.0
    """Position and width in percent of the drawing."""

    @property
    def number(self) -> int:
        return self.run_index + 1

    @property
    def label(self) -> str:
        if self.started_at is None:
            return f"Run {self.number} · {self.status.lower()} · not started"
        if self.ongoing:
            so_far = human_duration(self.seconds)
            return f"Run {self.number} · {self.status.lower()} · {so_far} so far"
        if self.ended_at is None:
            return f"Run {self.number} · {self.status.lower()} · end not known"
        return f"Run {self.number} · {self.status.lower()} · {human_duration(self.seconds)}"

    @property
    def label_at_end(self) -> bool:
        """Labels of bars in the right part of the drawing are anchored at their end."""
        return self.x > 55


@dataclass(frozen=True)
class TimelineMark:
    at: dt.datetime
    x: float
    label: str


@dataclass(frozen=True)
class Timeline:
    bars: list[TimelineBar]
    marks: list[TimelineMark]
    start: dt.datetime | None
    end: dt.datetime | None

    @property
    def drawn(self) -> list[TimelineBar]:
        return [b for b in self.bars if b.started_at is not None]

    @property
    def span(self) -> str:
        if self.start is None or self.end is None:
            return "—"
        return human_duration((self.end - self.start).total_seconds())


MIN_BAR_PERCENT = 1.0


def build_timeline(
    runs: Sequence[ExecutionRun], restarts: Sequence[Restart], current_run: int, now: dt.datetime
) -> Timeline:
    """One bar per run on a shared time axis; a run still going extends to now."""
    bars: list[TimelineBar] = []
    for run in runs:
        ongoing = (
            run.started_at is not None
            and run.ended_at is None
            and run.status not in FINAL_STATUSES
            and run.run_index == current_run
        )
        end = now if ongoing else run.ended_at
        seconds = (end - run.started_at).total_seconds() if run.started_at and end else None
        bars.append(
            TimelineBar(
                run_index=run.run_index,
                status=run.status,
                started_at=run.started_at,
                ended_at=run.ended_at,
                seconds=seconds,
                ongoing=ongoing,
                derived=run.start_derived or run.end_derived,
            )
        )
    sent = [(r.sent_at, r) for r in restarts if r.sent_at is not None]
    moments: list[dt.datetime] = [m for b in bars for m in (b.started_at, b.ended_at) if m]
    moments += [now for b in bars if b.ongoing]
    moments += [at for at, _ in sent]
    if not moments:
        return Timeline(bars, [], None, None)
    start, end = min(moments), max(moments)
    span = max((end - start).total_seconds(), 1.0)

    def pos(moment: dt.datetime) -> float:
        return round(100 * (moment - start).total_seconds() / span, 3)

    placed = []
    for bar in bars:
        if bar.started_at is None:
            placed.append(bar)
            continue
        x = pos(bar.started_at)
        bar_end = now if bar.ongoing else (bar.ended_at or bar.started_at)
        width = max(pos(bar_end) - x, MIN_BAR_PERCENT)
        x = min(x, 100 - width)
        placed.append(_with_geometry(bar, x, width))
    marks = [
        TimelineMark(at, pos(at), f"restart {'(manual) ' if r.manual else ''}sent")
        for at, r in sent
    ]
    return Timeline(placed, marks, start, end)


def _with_geometry(bar: TimelineBar, x: float, width: float) -> TimelineBar:
    return TimelineBar(
        bar.run_index,
        bar.status,
        bar.started_at,
        bar.ended_at,
        bar.seconds,
        bar.ongoing,
        bar.derived,
        x,
        width,
    )


@dataclass(frozen=True)
class HostChoice:
    host: str
    failure_class: str | None
    message: str | None


@dataclass(frozen=True)
class RestartOption:
    """Whether the restart action applies, what it offers, or why not."""

    allowed: bool
    blocker: str | None
    hosts: list[HostChoice]


@dataclass(frozen=True)
class EventView:
    event: Event
    payload: Any


@dataclass(frozen=True)
class DetailPage:
    detail: ExecutionDetail
    timeline: Timeline
    events: list[EventView]
    events_next: str | None
    events_cursor: str | None
    restart: RestartOption
    job_pause: Pause | None
    global_pause: Pause | None
    decisions_by_id: dict[int, Decision] = field(default_factory=dict)

    @property
    def execution(self) -> Execution:
        return self.detail.execution

    @property
    def current_failures(self) -> list[HostFailure]:
        run = self.detail.execution.run_index
        return [f for f in self.detail.failures if f.run_index == run]

    @property
    def earlier_failures(self) -> list[HostFailure]:
        run = self.detail.execution.run_index
        return [f for f in self.detail.failures if f.run_index != run]

    @property
    def pending_restarts(self) -> list[Restart]:
        return [r for r in self.detail.restarts if r.state in ACTIVE_RESTART_STATES]

    @property
    def is_live(self) -> bool:
        """Still changing: the execution runs, or a restart of it is under way."""
        return self.execution.status not in FINAL_STATUSES or bool(self.pending_restarts)


EVENTS_PER_PAGE = 50


def restart_option(detail: ExecutionDetail) -> RestartOption:
    execution = detail.execution
    current = {f.host: f for f in detail.failures if f.run_index == execution.run_index}
    hosts = [
        HostChoice(
            h,
            current[h].failure_class if h in current else None,
            current[h].message if h in current else None,
        )
        for h in execution.failed_hosts
    ]
    if execution.status not in FAILED_STATUSES:
        why = f"The execution is {execution.status}; only a failed execution can be restarted."
        return RestartOption(False, why, hosts)
    if any(r.state in ACTIVE_RESTART_STATES for r in detail.restarts):
        why = "A restart of this execution is already pending; cancel it to restart differently."
        return RestartOption(False, why, hosts)
    return RestartOption(True, None, hosts)


def detail_page(
    session: Session, execution_id: str, events_cursor: str | None, now: dt.datetime
) -> DetailPage:
    detail = execution_detail(session, execution_id)
    events: Page = list_events(session, detail.execution, EVENTS_PER_PAGE, events_cursor)
    pause_rows = {
        p.job_id: p
        for p in session.scalars(
            select(Pause).where(Pause.job_id.in_(("", detail.execution.job_id)))
        )
    }
    return DetailPage(
        detail=detail,
        timeline=build_timeline(detail.runs, detail.restarts, detail.execution.run_index, now),
        events=[EventView(e, redact(e.payload)) for e in events.items],
        events_next=events.next_cursor,
        events_cursor=events_cursor,
        restart=restart_option(detail),
        job_pause=pause_rows.get(detail.execution.job_id) if detail.execution.job_id else None,
        global_pause=pause_rows.get(""),
        decisions_by_id={d.id: d for d in detail.decisions},
    )


def restart_target(session: Session, execution_id: str) -> tuple[Execution, RestartOption]:
    """What the restart confirmation page needs."""
    detail = execution_detail(session, execution_id)
    return detail.execution, restart_option(detail)


@dataclass(frozen=True)
class CancelTarget:
    restart: Restart
    execution: Execution


def cancel_target(session: Session, restart_id: int) -> CancelTarget:
    row = session.execute(
        select(Restart, Execution)
        .join(Execution, Execution.id == Restart.execution_pk)
        .where(Restart.id == restart_id)
    ).one_or_none()
    if row is None:
        raise NotFound(f"no restart {restart_id}")
    return CancelTarget(*row)


def execution_id_of_restart(session: Session, restart_id: int) -> str | None:
    return session.scalar(
        select(Execution.execution_id)
        .join(Restart, Restart.execution_pk == Execution.id)
        .where(Restart.id == restart_id)
    )


def pause_of(session: Session, job_id: str | None) -> Pause | None:
    return session.scalars(select(Pause).where(Pause.job_id == (job_id or ""))).one_or_none()


# --- the policy ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RuleSummary:
    name: str
    description: str | None
    line: int
    conditions: list[str]
    effect: list[str]
    action: str


@dataclass(frozen=True)
class ExplainResult:
    execution: Execution
    explanation: Explanation


@dataclass(frozen=True)
class PolicyPage:
    loaded: LoadedPolicy
    last_error: PolicyLoadError | None
    defaults: list[str]
    rules: list[RuleSummary]
    budgets: list[BudgetLine]
    per_host: str | None
    count_manual: bool
    breaker: BreakerView | None
    quarantined: list[QuarantinedHost]
    pauses: list[Pause]
    explained: ExplainResult | None

    @property
    def policy(self) -> Policy:
        return self.loaded.policy


def _backoff_text(settings: Settings) -> str:
    b = settings.backoff
    text = f"{format_duration(b.initial)}, factor {b.factor:g}, at most {format_duration(b.max)}"
    return text + (f", ±{b.jitter:.0%} jitter" if b.jitter else "")


def settings_lines(settings: Settings, base: Settings | None = None) -> list[str]:
    """The settings as short phrases; with `base`, only those that differ from it."""
    lines = []
    if base is None or settings.action != base.action:
        lines.append(f"action: {settings.action}")
    if base is None or settings.hosts != base.hosts:
        lines.append(f"hosts: {settings.hosts}")
    if base is None or settings.max_restarts != base.max_restarts:
        lines.append(f"max_restarts: {settings.max_restarts}")
    if base is None or settings.backoff != base.backoff:
        lines.append(f"backoff: {_backoff_text(settings)}")
    if base is None or settings.deadline != base.deadline:
        deadline = format_duration(settings.deadline) if settings.deadline else "none"
        lines.append(f"deadline: {deadline}")
    if base is None or settings.require_unchanged != base.require_unchanged:
        lines.append(f"require_unchanged: {'yes' if settings.require_unchanged else 'no'}")
    return lines


def _patterns(values: Iterable[Any]) -> str:
    return " or ".join(str(getattr(v, "pattern", v)) for v in values)


def rule_summary(rule: Rule, defaults: Settings) -> RuleSummary:
    when = rule.when
    conditions = [
        f"{name}: {_patterns(values)}"
        for name, values in (
            ("account", when.account),
            ("job", when.job),
            ("status", when.status),
            ("host", when.host),
            ("failure", when.failure),
            ("message", when.message),
        )
        if values
    ] or ["every failure"]
    # The action is shown as a badge; the rest is what the rule changes from the defaults.
    changed = [
        line for line in settings_lines(rule.settings, defaults) if not line.startswith("action:")
    ]
    effect = changed or (
        ["everything else as the defaults"] if rule.settings.action == "restart" else []
    )
    return RuleSummary(
        rule.name, rule.description, rule.line, conditions, effect, rule.settings.action
    )


def explain(session: Session, policy: Policy, execution_id: str, now: dt.datetime) -> ExplainResult:
    """What the policy in force would decide for this execution now (NotFound if unknown)."""
    execution = get_execution(session, execution_id)
    inp = decision_input(session, policy, execution, now)
    return ExplainResult(execution, explain_decision(policy, inp))


def policy_page(
    session: Session,
    loaded: LoadedPolicy,
    last_error: PolicyLoadError | None,
    now: dt.datetime,
    explained: ExplainResult | None = None,
) -> PolicyPage:
    policy = loaded.policy
    per_host = policy.limits.per_host
    return PolicyPage(
        loaded=loaded,
        last_error=last_error,
        defaults=settings_lines(policy.defaults),
        rules=[rule_summary(r, policy.defaults) for r in policy.rules],
        budgets=budget_lines(session, policy, now),
        per_host=(
            f"{per_host.failures} failures within {format_duration(per_host.window)} "
            f"→ left out for {format_duration(per_host.quarantine)}"
            if per_host
            else None
        ),
        count_manual=policy.limits.count_manual,
        breaker=breaker_view(session, policy, now),
        quarantined=quarantined_hosts(session, per_host, now),
        pauses=pauses(session),
        explained=explained,
    )
