"""What each admin page shows: view models assembled from core queries, no SQL here.

Each page is built with a fixed number of queries (the core's), then the request's read
transaction ends before the template renders.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from app.core.decision_inputs import decision_input
from app.core.errors import NotFound, quoted
from app.core.left_failed import left_failed_by_execution
from app.core.notifications import active_mutes, notification_counts, recent_notifications
from app.core.policy_source import LoadedPolicy, PolicyLoadError
from app.core.queries import (
    ExecutionDetail,
    ExecutionFilters,
    Page,
    count_by_status,
    execution_detail,
    get_execution,
    list_events,
    list_executions,
    restart_with_execution,
)
from app.core.signatures import SignatureView, open_signatures, signature_view
from app.core.stats import (
    Backlog,
    BreakerView,
    BudgetLine,
    HourBucket,
    QuarantinedHost,
    SuccessRate,
    active_restarts,
    breaker_view,
    budget_lines,
    chart_start,
    dispatcher_backlog,
    failures_decided,
    hourly_buckets,
    job_descriptions,
    list_pauses,
    pause_of,
    pauses_for,
    quarantined_hosts,
    recent_actions,
    restarts_sent,
    success_rate,
)
from app.models import (
    ACTIVE_RESTART_STATES,
    AuditEntry,
    Decision,
    Event,
    Execution,
    HostFailure,
    Notification,
    Pause,
    Restart,
    RouteMute,
)
from app.policy import (
    ActiveBlackout,
    Blackout,
    Explanation,
    FailedShare,
    Policy,
    Rule,
    Schedule,
    Settings,
    SignatureBreaker,
    blackout_at,
    explain_decision,
    format_duration,
)
from app.policy.notify_model import NotifyConfig, Route
from app.redact import redact
from app.runner.documents import FINAL_STATUSES
from app.web.admin.restart_choice import RestartOption, quarantine_of, restart_option
from app.web.admin.timeline import Timeline, build_timeline

EVENTS_PER_PAGE = 50


# --- the executions list --------------------------------------------------------------------


@dataclass(frozen=True)
class ExecutionRow:
    execution: Execution
    job_description: str | None
    active_restart: str | None
    """"pending" or "in_flight" when a restart of this execution is under way."""
    left_failed: tuple[str, ...] = ()
    """Hosts a partial restart left failed (`app.core.left_failed`)."""


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
    descriptions = job_descriptions(session, sorted({e.job_id for e in executions if e.job_id}))
    active = active_restarts(session, [e.id for e in executions])
    left = left_failed_by_execution(session, executions)
    rows = [
        ExecutionRow(
            e,
            descriptions.get(e.job_id),
            active.get(e.id),
            tuple(x.host for x in left.get(e.id, ())),
        )
        for e in executions
    ]
    return ExecutionList(
        rows=rows,
        next_cursor=page.next_cursor,
        counts=count_by_status(session, filters),
        summary=summary(session, policy, now),
    )


def summary(session: Session, policy: Policy, now: dt.datetime) -> Summary:
    since = chart_start(now)
    return Summary(
        failures=failures_decided(session, since),
        restarts=restarts_sent(session, since),
        success=success_rate(session, since),
        quarantined=quarantined_hosts(session, policy.limits.per_host, now),
        backlog=dispatcher_backlog(session, now),
        paused_globally=pause_of(session, None),
    )


# --- the overview --------------------------------------------------------------------------


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
    signatures: list[SignatureView]
    signature_breaker: SignatureBreaker | None

    @property
    def empty(self) -> bool:
        return not any(b.failures or b.restarts for b in self.buckets)

    @property
    def peak(self) -> int:
        return max([1, *(max(b.failures, b.restarts) for b in self.buckets)])


def overview(session: Session, policy: Policy, now: dt.datetime) -> Overview:
    return Overview(
        now=now,
        since=chart_start(now),
        buckets=hourly_buckets(session, now),
        summary=summary(session, policy, now),
        budgets=budget_lines(session, policy, now),
        breaker=breaker_view(session, policy, now),
        pauses=list_pauses(session),
        recent_actions=recent_actions(session),
        signatures=open_signatures(session, policy, now),
        signature_breaker=policy.signature_breaker,
    )


def signature(session: Session, policy: Policy, key: str, now: dt.datetime) -> SignatureView:
    view = signature_view(session, policy, key, now)
    if view is None:
        raise NotFound(f"no error signature {quoted(key)}")
    return view


@dataclass(frozen=True)
class RouteLine:
    name: str
    events: str
    channels: str
    muted: RouteMute | None


@dataclass(frozen=True)
class NotificationsPage:
    config: NotifyConfig
    routes: list[RouteLine]
    digest: str
    log: list[Notification]
    counts: dict[str, int]


def _route_takes(route: Route) -> str:
    """What a route takes, in words: its events and the jobs, accounts and rules it names."""
    parts = [", ".join(e.replace("_", " ") for e in route.events) or "every event"]
    for label, names in (
        ("jobs", [g.pattern for g in route.jobs]),
        ("accounts", [g.pattern for g in route.accounts]),
        ("rules", list(route.rules)),
    ):
        if names:
            parts.append(f"{label} {', '.join(names)}")
    return " · ".join(parts)


def notifications_page(session: Session, policy: Policy, now: dt.datetime) -> NotificationsPage:
    config = policy.notify
    mutes = {m.route: m for m in active_mutes(session, now)}
    routes = [
        RouteLine(r.name, _route_takes(r), ", ".join(r.channels), mutes.get(r.name))
        for r in config.routes
    ]
    if config.default:
        routes.append(
            RouteLine(
                "default", "what no route takes", ", ".join(config.default), mutes.get("default")
            )
        )
    return NotificationsPage(
        config=config,
        routes=routes,
        digest=format_duration(config.digest) if config.digest else "no time (digests off)",
        log=recent_notifications(session),
        counts=notification_counts(session),
    )


# --- one execution -------------------------------------------------------------------------


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
    signature: SignatureView | None = None
    """The error signature of the latest failed run the policy decided."""
    notifications: list[Notification] = field(default_factory=list)

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
    def left_failed_runs(self) -> set[tuple[str, int]]:
        """(host, run) of each host's last failure that no restart since included."""
        return {(x.host, x.run_index) for x in self.detail.left_failed}

    @property
    def pending_restarts(self) -> list[Restart]:
        return [r for r in self.detail.restarts if r.state in ACTIVE_RESTART_STATES]

    @property
    def is_live(self) -> bool:
        """Still changing: the execution runs, or a restart of it is under way."""
        return self.execution.status not in FINAL_STATUSES or bool(self.pending_restarts)


EVENTS_PER_PAGE = 50


def detail_page(
    session: Session,
    execution_id: str,
    events_cursor: str | None,
    now: dt.datetime,
    policy: Policy | None = None,
) -> DetailPage:
    detail = execution_detail(session, execution_id)
    events: Page = list_events(session, detail.execution, EVENTS_PER_PAGE, events_cursor)
    pause_rows = pauses_for(session, detail.execution.job_id)
    return DetailPage(
        detail=detail,
        timeline=build_timeline(detail.runs, detail.restarts, detail.execution.run_index, now),
        events=[EventView(e, redact(e.payload)) for e in events.items],
        events_next=events.next_cursor,
        events_cursor=events_cursor,
        restart=restart_option(detail, quarantine_of(session, policy, detail.execution, now)),
        job_pause=pause_rows.get(detail.execution.job_id) if detail.execution.job_id else None,
        global_pause=pause_rows.get(""),
        decisions_by_id={d.id: d for d in detail.decisions},
        signature=_latest_signature(session, policy, detail.decisions, now),
        notifications=recent_notifications(session, 50, detail.execution),
    )


def _latest_signature(
    session: Session, policy: Policy | None, decisions: Iterable[Decision], now: dt.datetime
) -> SignatureView | None:
    keys = [d.signature for d in decisions if d.signature and d.origin == "policy"]
    if not keys or policy is None:
        return None
    return signature_view(session, policy, keys[-1], now)


@dataclass(frozen=True)
class CancelTarget:
    restart: Restart
    execution: Execution


def cancel_target(session: Session, restart_id: int) -> CancelTarget:
    return CancelTarget(*restart_with_execution(session, restart_id))


# --- the policy ----------------------------------------------------------------------------


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
    blackouts: list[BlackoutLine] = field(default_factory=list)
    blackout_now: ActiveBlackout | None = None
    signature_breaker: str | None = None

    @property
    def policy(self) -> Policy:
        return self.loaded.policy


_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True)
class BlackoutLine:
    name: str
    days: str
    hours: str
    tz: str
    active_until: dt.datetime | None
    """When this window is active now: the moment restarts may go again."""


def blackout_line(window: Blackout, now: dt.datetime) -> BlackoutLine:
    days = (
        "every day" if len(window.days) == 7 else ", ".join(_DAYS[d] for d in sorted(window.days))
    )
    end = window.end.strftime("%H:%M") if window.end is not None else "24:00"
    active = blackout_at(_alone(window), now)
    return BlackoutLine(
        window.name,
        days,
        f"{window.start.strftime('%H:%M')} to {end}",
        window.tz,
        active.ends_at if active is not None else None,
    )


def _alone(window: Blackout) -> Schedule:
    return Schedule(blackouts=(window,))


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
    if settings.ignore_blackouts and (base is None or not base.ignore_blackouts):
        lines.append("ignore_blackouts: yes")
    return lines


def failed_share_text(share: FailedShare) -> str:
    parts = []
    if share.min is not None:
        parts.append(f"at least {share.min}")
    if share.max is not None:
        parts.append(f"at most {share.max}")
    if share.ratio_over is not None:
        parts.append(f"more than {share.ratio_over:.0%} of the run's hosts")
    return "failed hosts: " + ", ".join(parts)


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
    ]
    if when.failed_hosts is not None:
        conditions.append(failed_share_text(when.failed_hosts))
    conditions = conditions or ["every failure"]
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
        pauses=list_pauses(session),
        explained=explained,
        blackouts=[blackout_line(w, now) for w in policy.schedule.blackouts],
        blackout_now=blackout_at(policy.schedule, now),
        signature_breaker=_signature_breaker_text(policy.signature_breaker),
    )


def _signature_breaker_text(breaker: SignatureBreaker | None) -> str | None:
    if breaker is None:
        return None
    return (
        f"the same failure in {breaker.executions}+ executions of {breaker.jobs}+ jobs within "
        f"{format_duration(breaker.window)} holds new restarts with it; it closes "
        f"{format_duration(breaker.cool_down)} after that last held"
    )
