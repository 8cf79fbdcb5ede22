"""``decide_restart``: one failed execution in, one decision out.

Pure: the time, the budget usage and the histories are inputs, so the same input always gives
the same decision (the backoff jitter is derived from the execution id and attempt number).
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Final

from app.policy.durations import format_duration, format_seconds
from app.policy.loader import MAX_RESTARTS_LIMIT
from app.policy.model import (
    FAILED_STATUSES,
    FAILURE_CLASSES,
    NO_RULE,
    Backoff,
    BreakerState,
    Budget,
    Check,
    CircuitBreaker,
    Decision,
    DecisionInput,
    ExcludedHost,
    Explanation,
    Glob,
    HostLimit,
    Policy,
    ReasonCode,
    RestartOutcome,
    Rule,
    RuleTrace,
    Settings,
    When,
)

_MAX_LISTED: Final = 5


# --- public helpers -----------------------------------------------------------------------------


def backoff_delay(backoff: Backoff, execution_id: str, prior_restarts: int) -> float:
    """Seconds to wait before restart number ``prior_restarts + 1`` of this execution.

    The base delay of attempt k (0-based) is ``min(max, initial * factor**k)``; jitter moves it
    by up to ±``jitter`` of itself, by a fraction fixed by sha256(execution id, k); the result is
    clamped to [0, max] and never below the delay of any earlier attempt. Rounded to whole
    seconds (rounding keeps both properties: durations in the policy are whole seconds).
    """
    cap = backoff.max.total_seconds()
    base = min(backoff.initial.total_seconds(), cap)
    delay = 0.0
    for attempt in range(min(prior_restarts, MAX_RESTARTS_LIMIT) + 1):
        jittered = base * (1.0 + backoff.jitter * _jitter_unit(execution_id, attempt))
        delay = max(delay, min(max(jittered, 0.0), cap))
        base = min(base * backoff.factor, cap)
    return float(round(delay))


def quarantined_until(
    limit: HostLimit, failure_times: Iterable[datetime], now: datetime
) -> datetime | None:
    """When a host's quarantine ends, or None if it is not quarantined at ``now``.

    A failure at time t that makes ``limit.failures`` failures inside (t - window, t]
    quarantines the host during [t, t + quarantine). Failures after ``now`` are ignored.
    """
    times = sorted(t for t in failure_times if t <= now)
    start = 0
    until: datetime | None = None
    for index, moment in enumerate(times):
        while times[start] <= moment - limit.window:
            start += 1
        if index - start + 1 >= limit.failures and now < moment + limit.quarantine:
            until = moment + limit.quarantine
    return until


def breaker_state(
    breaker: CircuitBreaker, outcomes: Iterable[RestartOutcome], now: datetime
) -> BreakerState:
    """Whether the circuit breaker is open at ``now``.

    At a moment t the trip condition holds when the outcomes inside (t - window, t] number at
    least ``min_restarts`` and the share that failed again is at least ``failure_ratio``. The
    breaker is open at ``now`` when the condition holds now or held at some moment less than
    ``cool_down`` ago. Outcomes after ``now`` are ignored. The condition can only change when an
    outcome enters the window (its time) or leaves it (its time + window), so only those moments
    are evaluated.
    """
    finished = sorted((o for o in outcomes if o.at <= now), key=lambda o: o.at)
    times = [o.at for o in finished]
    failed_before = [0]
    for outcome in finished:
        failed_before.append(failed_before[-1] + (1 if outcome.failed_again else 0))
    moments = sorted({*times, *(t + breaker.window for t in times if t + breaker.window <= now)})
    held_end: datetime | None = None
    holding_now = False
    counts = (0, 0)
    for index, moment in enumerate(moments):
        high = bisect.bisect_right(times, moment)
        low = bisect.bisect_right(times, moment - breaker.window)
        total = high - low
        failed = failed_before[high] - failed_before[low]
        if total >= breaker.min_restarts and failed / total >= breaker.failure_ratio:
            counts = (failed, total)
            if index + 1 < len(moments):
                held_end = moments[index + 1]
            else:
                holding_now = True
    if holding_now:
        return BreakerState(True, now + breaker.cool_down, *counts)
    if held_end is not None and now < held_end + breaker.cool_down:
        return BreakerState(True, held_end + breaker.cool_down, *counts)
    high = len(times)
    low = bisect.bisect_right(times, now - breaker.window)
    return BreakerState(False, None, failed_before[high] - failed_before[low], high - low)


def decide_restart(policy: Policy, inp: DecisionInput) -> Decision:
    """Whether, when and against which hosts to restart this failed execution."""
    hosts = _prepare_hosts(inp)
    rule, qualifying = _first_match(policy.rules, inp, hosts)
    state = _State()
    for gate in _gates(policy, inp, rule, qualifying, hosts, state):
        if not gate.check.passed:
            return _decision(policy, inp, rule, state, "skip", gate.check.code, gate.reason)
    settings = rule.settings if rule is not None else policy.defaults
    sentence = _restart_sentence(inp, rule, settings, state, len(hosts))
    return _decision(policy, inp, rule, state, "restart", ReasonCode.RESTART, sentence)


def explain_decision(policy: Policy, inp: DecisionInput) -> Explanation:
    """The decision, every rule's match with its reasons, and every gate's outcome."""
    decision = decide_restart(policy, inp)
    hosts = _prepare_hosts(inp)
    traces: list[RuleTrace] = []
    chosen: Rule | None = None
    chosen_hosts: tuple[_Host, ...] = hosts
    for rule in policy.rules:
        matched, qualifying, reasons = _match(rule.when, inp, hosts, explain=True)
        if matched and chosen is not None:
            reasons.append(f"not used: rule {chosen.name} matched first")
        traces.append(RuleTrace(rule.name, matched, tuple(reasons)))
        if matched and chosen is None:
            chosen, chosen_hosts = rule, qualifying
    state = _State(explain=True)
    checks = tuple(gate.check for gate in _gates(policy, inp, chosen, chosen_hosts, hosts, state))
    return Explanation(decision=decision, traces=tuple(traces), checks=checks)


def format_explanation(explanation: Explanation) -> str:
    """A plain-text rendering of an explanation, for the command line."""
    decision = explanation.decision
    lines = [
        f"decision: {decision.action} ({decision.reason_code})",
        f"reason:   {decision.reason}",
        f"rule:     {decision.rule}",
        f"policy:   {decision.policy_version}",
    ]
    if decision.hosts:
        lines.append(f"hosts:    {', '.join(decision.hosts)}")
    for excluded in decision.excluded_hosts:
        lines.append(f"left out: {excluded.host}: {excluded.reason} [{excluded.code}]")
    lines.append("rules:")
    if not explanation.traces:
        lines.append("  (none: the defaults decide)")
    for trace in explanation.traces:
        mark = "match   " if trace.matched else "no match"
        lines.append(f"  {mark} {trace.rule}")
        lines.extend(f"           - {reason}" for reason in trace.reasons)
    lines.append("checks:")
    for check in explanation.checks:
        mark = "ok  " if check.passed else "FAIL"
        lines.append(f"  {mark} {check.code}: {check.detail}")
    return "\n".join(lines)


# --- matching -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Host:
    host: str
    failure_class: str
    message: str
    changed: int | None
    stand_in: bool = False
    """The stand-in for an execution without failed hosts: host globs never match it."""


def _prepare_hosts(inp: DecisionInput) -> tuple[_Host, ...]:
    seen: set[str] = set()
    hosts: list[_Host] = []
    for failure in inp.failed_hosts:
        if failure.host in seen:
            continue
        seen.add(failure.host)
        failure_class = failure.failure_class.lower()
        if failure_class not in FAILURE_CLASSES:
            failure_class = "unknown"
        hosts.append(_Host(failure.host, failure_class, failure.message, failure.changed))
    return tuple(hosts)


def _stand_in(inp: DecisionInput) -> _Host:
    failure_class = "init_failure" if inp.status.upper() == "INIT_FAILURE" else "unknown"
    return _Host("", failure_class, "", None, stand_in=True)


def _first_match(
    rules: Sequence[Rule], inp: DecisionInput, hosts: tuple[_Host, ...]
) -> tuple[Rule | None, tuple[_Host, ...]]:
    for rule in rules:
        matched, qualifying, _ = _match(rule.when, inp, hosts, explain=False)
        if matched:
            return rule, qualifying
    return None, hosts


def _host_matches(when: When, host: _Host) -> bool:
    if when.host and (host.stand_in or not any(g.matches(host.host) for g in when.host)):
        return False
    if when.failure and host.failure_class not in when.failure:
        return False
    return not when.message or any(p.search(host.message) for p in when.message)


def _host_mismatch(when: When, host: _Host) -> str:
    name = "(no failed host)" if host.stand_in else host.host
    if when.host and (host.stand_in or not any(g.matches(host.host) for g in when.host)):
        return f"{name} does not match host {_globs(when.host)}"
    if when.failure and host.failure_class not in when.failure:
        return f"{name}: failure {host.failure_class} is not in [{', '.join(when.failure)}]"
    patterns = " or ".join(repr(p.pattern) for p in when.message)
    return f"{name}: message {_quote(host.message)} does not match {patterns}"


def _match(
    when: When, inp: DecisionInput, hosts: tuple[_Host, ...], *, explain: bool
) -> tuple[bool, tuple[_Host, ...], list[str]]:
    """Whether a rule's conditions hold, the failed hosts that satisfy its host conditions, why."""
    reasons: list[str] = []
    matched = True
    status = inp.status.upper()
    if when.status:
        if status in when.status:
            if explain:
                reasons.append(f"status {status} is in [{', '.join(when.status)}]")
        else:
            if not explain:
                return False, (), reasons
            matched = False
            reasons.append(f"status {status} is not in [{', '.join(when.status)}]")
    if when.account:
        if any(g.matches(inp.account) for g in when.account):
            if explain:
                reasons.append(f"account {_quote(inp.account)} matches {_globs(when.account)}")
        else:
            if not explain:
                return False, (), reasons
            matched = False
            reasons.append(f"account {_quote(inp.account)} does not match {_globs(when.account)}")
    if when.job:
        names = [inp.job_id] if inp.job_description is None else [inp.job_id, inp.job_description]
        job = f"job {_quote(inp.job_id)}"
        if inp.job_description is not None:
            job += f" (description {_quote(inp.job_description)})"
        if any(g.matches(name) for g in when.job for name in names):
            if explain:
                reasons.append(f"{job} matches {_globs(when.job)}")
        else:
            if not explain:
                return False, (), reasons
            matched = False
            reasons.append(f"{job} does not match {_globs(when.job)}")
    if not when.has_host_conditions:
        if explain and when.is_catch_all:
            reasons.append("no conditions: matches every failure")
        return matched, hosts, reasons
    pool = hosts or (_stand_in(inp),)
    qualifying = tuple(h for h in pool if _host_matches(when, h))
    if qualifying:
        if explain:
            names = [h.host for h in qualifying if not h.stand_in]
            if names:
                reasons.append(
                    f"{len(names)} of {len(pool)} failed hosts match the host conditions: "
                    f"{_names(names)}"
                )
            else:
                reasons.append(
                    f"no failed hosts; the {status} failure counts as {pool[0].failure_class}"
                )
    else:
        matched = False
        if explain:
            misses = [_host_mismatch(when, h) for h in pool[:_MAX_LISTED]]
            more = f"; and {len(pool) - _MAX_LISTED} more" if len(pool) > _MAX_LISTED else ""
            reasons.append(f"no failed host matches: {'; '.join(misses)}{more}")
    return matched, tuple(h for h in qualifying if not h.stand_in), reasons


# --- gates --------------------------------------------------------------------------------------


@dataclass
class _State:
    """What the gates worked out so far; the decision is built from it."""

    explain: bool = False
    delay: float | None = None
    due_at: datetime | None = None
    hosts: tuple[str, ...] = ()
    excluded: list[ExcludedHost] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Gate:
    check: Check
    reason: str = ""
    """The decision's sentence when this gate fails."""


def _gates(
    policy: Policy,
    inp: DecisionInput,
    rule: Rule | None,
    qualifying: tuple[_Host, ...],
    hosts: tuple[_Host, ...],
    state: _State,
) -> Iterator[_Gate]:
    """Every gate in order; ``decide_restart`` stops at the first that fails."""
    settings = rule.settings if rule is not None else policy.defaults
    by = _by(rule)
    now = inp.now
    status = inp.status.upper()

    if status in FAILED_STATUSES:
        yield _pass(state, ReasonCode.NOT_FAILED, lambda: f"status {status} is a failure")
    else:
        yield _Gate(
            Check(ReasonCode.NOT_FAILED, False, f"status {status} is not FAILURE or INIT_FAILURE"),
            f"skip: status {status} is not a failure",
        )

    if inp.paused is None:
        yield _pass(state, ReasonCode.PAUSED, lambda: "automatic restarts are not paused")
    else:
        text = inp.paused.strip() or "automatic restarts are paused"
        yield _Gate(Check(ReasonCode.PAUSED, False, text), f"skip: {text}")

    if settings.action == "restart":
        yield _pass(state, ReasonCode.RULE_SKIP, lambda: f"{by} says restart")
    else:
        yield _Gate(Check(ReasonCode.RULE_SKIP, False, f"{by} says skip"), f"skip by {by}")

    limit = settings.max_restarts
    done = inp.prior_restarts

    def restarts_so_far() -> str:
        return f"{done} earlier automatic restart{_s(done)}, max_restarts {limit} ({by})"

    if done < limit:
        yield _pass(state, ReasonCode.MAX_RESTARTS, restarts_so_far)
    else:
        yield _Gate(
            Check(ReasonCode.MAX_RESTARTS, False, restarts_so_far()),
            f"skip: max_restarts {limit} reached ({by})",
        )

    state.delay = backoff_delay(settings.backoff, inp.execution_id, done)
    state.due_at = (now + timedelta(seconds=state.delay)).astimezone(UTC)
    yield _deadline_gate(settings, inp, state)

    yield from _host_gates(policy, inp, settings, rule, qualifying, hosts, state)

    usage = inp.usage
    limits = policy.limits
    for code, budget, used, label in (
        (ReasonCode.BUDGET_PER_JOB, limits.per_job, usage.per_job, "per-job"),
        (ReasonCode.BUDGET_PER_ACCOUNT, limits.per_account, usage.per_account, "per-account"),
        (ReasonCode.BUDGET_GLOBAL, limits.global_, usage.global_, "global"),
    ):
        yield _budget_gate(state, code, budget, used, label)

    breaker = policy.circuit_breaker
    if breaker is None:
        yield _pass(state, ReasonCode.BREAKER_OPEN, lambda: "circuit breaker is off")
        return
    found = breaker_state(breaker, inp.restart_outcomes, now)
    window = format_duration(breaker.window)
    if not found.open:
        yield _pass(
            state,
            ReasonCode.BREAKER_OPEN,
            lambda: (
                f"circuit breaker closed: {found.failed} of {found.total} restarts within "
                f"{window} failed again"
            ),
        )
    else:
        until = _at(found.until or now, now)
        yield _Gate(
            Check(
                ReasonCode.BREAKER_OPEN,
                False,
                f"circuit breaker open until {until}: {found.failed} of {found.total} restarts "
                f"within {window} failed again",
            ),
            f"skip: circuit breaker open until {until} ({found.failed} of {found.total} "
            f"restarts within {window} failed again)",
        )


def _deadline_gate(settings: Settings, inp: DecisionInput, state: _State) -> _Gate:
    deadline = settings.deadline
    if deadline is None:
        return _pass(state, ReasonCode.DEADLINE, lambda: "no deadline")
    now = inp.now
    due_at = state.due_at or now
    deadline_at = inp.first_failure_at + deadline
    if due_at <= deadline_at:
        return _pass(
            state,
            ReasonCode.DEADLINE,
            lambda: (
                f"due at {_at(due_at, now)}, within the deadline {format_duration(deadline)} "
                f"after the first failure ({_at(deadline_at, now)})"
            ),
        )
    span = format_duration(deadline)
    detail = (
        f"due at {_at(due_at, now)}, after the deadline {span} after the first failure "
        f"({_at(deadline_at, now)})"
    )
    if now >= deadline_at:
        reason = f"skip: deadline {span} after the first failure passed at {_at(deadline_at, now)}"
    else:
        reason = (
            f"skip: the restart would be due at {_at(due_at, now)}, after the deadline "
            f"{span} after the first failure ({_at(deadline_at, now)})"
        )
    return _Gate(Check(ReasonCode.DEADLINE, False, detail), reason)


def _host_gates(
    policy: Policy,
    inp: DecisionInput,
    settings: Settings,
    rule: Rule | None,
    qualifying: tuple[_Host, ...],
    hosts: tuple[_Host, ...],
    state: _State,
) -> Iterator[_Gate]:
    now = inp.now
    limit = policy.limits.per_host

    def quarantine_of(host: _Host) -> ExcludedHost | None:
        if limit is None:
            return None
        until = quarantined_until(limit, inp.host_failure_times.get(host.host, ()), now)
        if until is None:
            return None
        return ExcludedHost(
            host.host,
            ReasonCode.QUARANTINE,
            f"quarantined until {_at(until, now)} ({limit.failures} failure{_s(limit.failures)} "
            f"within {format_duration(limit.window)})",
        )

    def unsafe_of(host: _Host) -> ExcludedHost | None:
        if not settings.require_unchanged or host.changed == 0:
            return None
        if host.changed is None:
            if host.failure_class == "init_failure":
                return None  # it failed before Ansible ran, so nothing was changed
            why = "changed count unknown (require_unchanged)"
        else:
            count = host.changed
            why = f"changed {count} task{_s(count)} before failing (require_unchanged)"
        return ExcludedHost(host.host, ReasonCode.UNSAFE_CHANGED, why)

    if settings.hosts == "none":
        yield _pass(
            state, ReasonCode.NO_FAILED_HOSTS, lambda: "hosts: none restarts without a host list"
        )
        held = [e for e in map(quarantine_of, hosts) if e is not None]
        changed = [e for e in map(unsafe_of, hosts) if e is not None]
        state.excluded = held + changed
        note = ", and hosts: none cannot leave hosts out"
        yield _gate_for_all(
            ReasonCode.QUARANTINE, held, "quarantined", "no failed host is quarantined", note
        )
        yield _gate_for_all(
            ReasonCode.UNSAFE_CHANGED,
            changed,
            "unsafe to restart under require_unchanged",
            "no failed host changed anything"
            if settings.require_unchanged
            else "require_unchanged is off",
            note,
        )
        state.hosts = ()
        state.excluded = []
        return

    if not hosts:
        if inp.status.upper() == "INIT_FAILURE":
            yield _pass(
                state,
                ReasonCode.NO_FAILED_HOSTS,
                lambda: "INIT_FAILURE without failed hosts: restart with no host list",
            )
        else:
            yield _Gate(
                Check(ReasonCode.NO_FAILED_HOSTS, False, "no failed hosts are known"),
                f"skip: no failed hosts are known to restart (hosts: {settings.hosts})",
            )
        yield _pass(state, ReasonCode.QUARANTINE, lambda: "no failed hosts to check")
        yield _pass(state, ReasonCode.UNSAFE_CHANGED, lambda: "no failed hosts to check")
        state.hosts = ()
        return

    yield _pass(
        state, ReasonCode.NO_FAILED_HOSTS, lambda: f"{len(hosts)} failed host{_s(len(hosts))}"
    )
    targets = hosts
    if settings.hosts == "failed" and rule is not None and rule.when.has_host_conditions:
        chosen = {h.host for h in qualifying}
        targets = tuple(h for h in hosts if h.host in chosen)
        state.excluded.extend(
            ExcludedHost(h.host, ReasonCode.NOT_MATCHED, f"not matched by rule {rule.name}")
            for h in hosts
            if h.host not in chosen
        )

    survivors: list[_Host] = []
    quarantined: list[ExcludedHost] = []
    for host in targets:
        excluded = quarantine_of(host)
        if excluded is None:
            survivors.append(host)
        else:
            quarantined.append(excluded)
    state.excluded.extend(quarantined)
    if survivors or not quarantined:
        yield _pass(
            state,
            ReasonCode.QUARANTINE,
            lambda: (
                f"{len(quarantined)} of {len(targets)} host{_s(len(targets))} quarantined"
                if limit is not None
                else "per-host limit is off"
            ),
        )
    else:
        yield _gate_for_all(ReasonCode.QUARANTINE, quarantined, "quarantined", "")
        if not state.explain:
            return
        survivors = list(targets)

    safe: list[_Host] = []
    unsafe: list[ExcludedHost] = []
    for host in survivors:
        excluded = unsafe_of(host)
        if excluded is None:
            safe.append(host)
        else:
            unsafe.append(excluded)
    state.excluded.extend(unsafe)
    if not settings.require_unchanged:
        yield _pass(state, ReasonCode.UNSAFE_CHANGED, lambda: "require_unchanged is off")
    elif safe:
        yield _pass(
            state,
            ReasonCode.UNSAFE_CHANGED,
            lambda: f"{len(safe)} of {len(survivors)} host{_s(len(survivors))} changed nothing",
        )
    else:
        yield _gate_for_all(
            ReasonCode.UNSAFE_CHANGED, unsafe, "unsafe to restart under require_unchanged", ""
        )
    state.hosts = tuple(h.host for h in safe)


def _pass(state: _State, code: str, detail: Callable[[], str]) -> _Gate:
    """A gate that passed; its detail is only worked out for an explanation."""
    return _Gate(Check(code, True, detail() if state.explain else ""))


def _gate_for_all(
    code: str, blocking: list[ExcludedHost], what: str, fine: str, note: str = ""
) -> _Gate:
    """A gate that fails when any host is in ``blocking``."""
    if not blocking:
        return _Gate(Check(code, True, fine))
    details = "; ".join(f"{e.host}: {e.reason}" for e in blocking[:_MAX_LISTED])
    if len(blocking) > _MAX_LISTED:
        details += f"; and {len(blocking) - _MAX_LISTED} more"
    if len(blocking) == 1:
        sentence = f"skip: host {blocking[0].host}: {blocking[0].reason}{note}"
    else:
        names = _names([e.host for e in blocking])
        sentence = f"skip: {len(blocking)} hosts are {what}: {names}{note}"
    return _Gate(Check(code, False, details), sentence)


def _budget_gate(state: _State, code: str, budget: Budget | None, used: int, label: str) -> _Gate:
    if budget is None:
        return _pass(state, code, lambda: f"{label} budget is off")
    window = format_duration(budget.window)
    if used < budget.restarts:
        return _pass(
            state,
            code,
            lambda: f"{label} budget: {used} of {budget.restarts} restarts used within {window}",
        )
    detail = f"{label} budget: {used} of {budget.restarts} restarts used within {window}"
    return _Gate(
        Check(code, False, detail),
        f"skip: {label} budget of {budget.restarts} restart{_s(budget.restarts)} per {window} "
        "is used up",
    )


# --- the decision -------------------------------------------------------------------------------


def _decision(
    policy: Policy,
    inp: DecisionInput,
    rule: Rule | None,
    state: _State,
    action: str,
    code: str,
    reason: str,
) -> Decision:
    restart = action == "restart"
    return Decision(
        action="restart" if restart else "skip",
        hosts=state.hosts if restart else (),
        excluded_hosts=tuple(state.excluded),
        due_at=state.due_at if restart else None,
        backoff_seconds=state.delay if restart else None,
        rule=rule.name if rule is not None else NO_RULE,
        reason_code=code,
        reason=reason,
        policy_version=policy.version_hash,
        attempt=inp.prior_restarts + 1,
    )


def _restart_sentence(
    inp: DecisionInput, rule: Rule | None, settings: Settings, state: _State, failed: int
) -> str:
    if state.hosts:
        what = f"restart {len(state.hosts)} of {failed} host{_s(failed)}"
    elif settings.hosts == "none":
        what = "restart all hosts (no host list)"
    else:
        what = "restart with no host list"
    due = _at(state.due_at or inp.now, inp.now)
    backoff = format_seconds(state.delay or 0.0)
    attempt = f"attempt {inp.prior_restarts + 1} of {settings.max_restarts}"
    return f"{what} at {due} by {_by(rule)} ({attempt}, backoff {backoff})"


# --- small helpers ------------------------------------------------------------------------------


def _jitter_unit(execution_id: str, attempt: int) -> float:
    """A number in [-1, 1) fixed by the execution and the attempt."""
    digest = hashlib.sha256(f"{execution_id}:{attempt}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**63 - 1.0


def _by(rule: Rule | None) -> str:
    return f"rule {rule.name}" if rule is not None else "the defaults"


def _at(moment: datetime, now: datetime) -> str:
    moment = moment.astimezone(UTC)
    if moment.date() == now.astimezone(UTC).date():
        return moment.strftime("%H:%M:%S UTC")
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _s(count: int) -> str:
    return "" if count == 1 else "s"


def _quote(text: str, limit: int = 40) -> str:
    return repr(text if len(text) <= limit else text[: limit - 1] + "…")


def _globs(globs: tuple[Glob, ...]) -> str:
    return " or ".join(repr(g.pattern) for g in globs)


def _names(names: Sequence[str]) -> str:
    shown = ", ".join(names[:_MAX_LISTED])
    return shown + (f" and {len(names) - _MAX_LISTED} more" if len(names) > _MAX_LISTED else "")
