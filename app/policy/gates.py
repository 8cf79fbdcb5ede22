"""The gates a matched failure passes before it is restarted, in order: status, pause, the
rule's action, max_restarts, the deadline, blackouts, the hosts (quarantine,
require_unchanged), the budgets, the circuit breaker and the error-signature breaker. Each gate
yields a `Check`; the first that fails decides (the error-signature breaker holds the restart
rather than skipping it)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Final

from app.policy.durations import format_duration
from app.policy.matching import FailedHost, run_share
from app.policy.model import (
    FAILED_STATUSES,
    Budget,
    Check,
    DecisionInput,
    ExcludedHost,
    Policy,
    ReasonCode,
    Rule,
    Settings,
    Signature,
)
from app.policy.schedule import blackout_at, wall_time
from app.policy.signatures import signature_state
from app.policy.text import MAX_LISTED, at_time, by_rule, name_list, plural, quote
from app.policy.timing import backoff_delay, breaker_state, quarantined_until

SIGNATURE_SHOWN: Final = 120
"""Characters of a signature quoted in a sentence."""


@dataclass
class GateState:
    """What the gates worked out so far; the decision is built from it."""

    explain: bool = False
    delay: float | None = None
    due_at: datetime | None = None
    hosts: tuple[str, ...] = ()
    excluded: list[ExcludedHost] = field(default_factory=list)
    deferred_by: str | None = None
    """The blackout that moved ``due_at`` to its end."""


@dataclass(frozen=True, slots=True)
class Gate:
    check: Check
    reason: str = ""
    """The decision's sentence when this gate fails."""
    held_until: datetime | None = None
    """Set when the failed gate holds the restart (action ``held``) rather than skipping it."""


def gates(
    policy: Policy,
    inp: DecisionInput,
    rule: Rule | None,
    qualifying: tuple[FailedHost, ...],
    hosts: tuple[FailedHost, ...],
    state: GateState,
) -> Iterator[Gate]:
    """Every gate in order; ``decide_restart`` stops at the first that fails."""
    settings = rule.settings if rule is not None else policy.defaults
    by = by_rule(rule)
    now = inp.now
    status = inp.status.upper()

    if status in FAILED_STATUSES:
        yield passed(state, ReasonCode.NOT_FAILED, lambda: f"status {status} is a failure")
    else:
        yield Gate(
            Check(ReasonCode.NOT_FAILED, False, f"status {status} is not FAILURE or INIT_FAILURE"),
            f"skip: status {status} is not a failure",
        )

    if inp.paused is None:
        yield passed(state, ReasonCode.PAUSED, lambda: "automatic restarts are not paused")
    else:
        text = inp.paused.strip() or "automatic restarts are paused"
        yield Gate(Check(ReasonCode.PAUSED, False, text), f"skip: {text}")

    if settings.action == "restart":
        yield passed(state, ReasonCode.RULE_SKIP, lambda: f"{by} says restart")
    elif rule is not None and rule.when.failed_hosts is not None:
        yield systemic_gate(inp, rule, len(hosts))
    else:
        yield Gate(Check(ReasonCode.RULE_SKIP, False, f"{by} says skip"), f"skip by {by}")

    limit = settings.max_restarts
    done = inp.prior_restarts

    def restarts_so_far() -> str:
        return f"{done} earlier automatic restart{plural(done)}, max_restarts {limit} ({by})"

    if done < limit:
        yield passed(state, ReasonCode.MAX_RESTARTS, restarts_so_far)
    else:
        yield Gate(
            Check(ReasonCode.MAX_RESTARTS, False, restarts_so_far()),
            f"skip: max_restarts {limit} reached ({by})",
        )

    state.delay = backoff_delay(settings.backoff, inp.execution_id, done)
    state.due_at = (now + timedelta(seconds=state.delay)).astimezone(UTC)
    yield deadline_gate(settings, inp, state)
    yield blackout_gate(policy, settings, inp, state, by)

    yield from _hostgates(policy, inp, settings, rule, qualifying, hosts, state)

    usage = inp.usage
    limits = policy.limits
    for code, budget, used, label in (
        (ReasonCode.BUDGET_PER_JOB, limits.per_job, usage.per_job, "per-job"),
        (ReasonCode.BUDGET_PER_ACCOUNT, limits.per_account, usage.per_account, "per-account"),
        (ReasonCode.BUDGET_GLOBAL, limits.global_, usage.global_, "global"),
    ):
        yield budget_gate(state, code, budget, used, label)

    yield breaker_gate(policy, inp, state)
    yield signature_gate(policy, inp, state)


def systemic_gate(inp: DecisionInput, rule: Rule, failed: int) -> Gate:
    """A skip by a rule about the run's failed share: the run failed, not a host."""
    share = run_share(failed, inp.run_host_count)
    if share is None:
        what = f"{failed} host{plural(failed)} failed"
    else:
        what = f"{failed} of {share[0]} host{plural(share[0])} failed"
    return Gate(
        Check(ReasonCode.SYSTEMIC, False, f"rule {rule.name} says skip: {what} (systemic)"),
        f"skip: systemic failure, {what} (rule {rule.name})",
    )


def blackout_gate(
    policy: Policy, settings: Settings, inp: DecisionInput, state: GateState, by: str
) -> Gate:
    """Moves a due time inside a blackout to the blackout's end, unless that passes the
    deadline (then the failure is skipped)."""
    now = inp.now
    if not policy.schedule.blackouts:
        return passed(state, ReasonCode.BLACKOUT, lambda: "no blackout windows")
    if settings.ignore_blackouts:
        return passed(state, ReasonCode.BLACKOUT, lambda: f"{by} ignores blackouts")
    due_at = state.due_at or now
    found = blackout_at(policy.schedule, due_at)
    if found is None:
        return passed(
            state, ReasonCode.BLACKOUT, lambda: f"due at {at_time(due_at, now)}, outside blackouts"
        )
    ends = at_time(found.ends_at, now)
    named = next(b for b in policy.schedule.blackouts if b.name == found.name)
    local = f"{wall_time(found.ends_at, named.zone)} {named.tz}"
    inside = f"due at {at_time(due_at, now)}, inside blackout {found.name} until {ends} ({local})"
    deadline = settings.deadline
    if deadline is None:
        state.due_at, state.deferred_by = found.ends_at, found.name
        return passed(state, ReasonCode.BLACKOUT, lambda: f"{inside}: deferred (no deadline)")
    deadline_at = inp.first_failure_at + deadline
    span = format_duration(deadline)
    if found.ends_at <= deadline_at:
        state.due_at, state.deferred_by = found.ends_at, found.name
        return passed(
            state,
            ReasonCode.BLACKOUT,
            lambda: (
                f"{inside}: deferred, within the deadline {span} after the first failure "
                f"({at_time(deadline_at, now)})"
            ),
        )
    return Gate(
        Check(
            ReasonCode.BLACKOUT,
            False,
            f"{inside}, after the deadline {span} after the first failure "
            f"({at_time(deadline_at, now)})",
        ),
        f"skip: blackout {found.name} lasts until {ends}, past the deadline {span} after the "
        f"first failure ({at_time(deadline_at, now)})",
    )


def signature_text(signature: Signature) -> str:
    """How a signature is shown in a sentence: its class and text, quoted, shortened."""
    return quote(f"{signature.failure_class}: {signature.text}", SIGNATURE_SHOWN)


def signature_gate(policy: Policy, inp: DecisionInput, state: GateState) -> Gate:
    """The error-signature breaker: an open one holds the restart until it closes."""
    breaker = policy.signature_breaker
    if breaker is None:
        return passed(state, ReasonCode.SIGNATURE_OPEN, lambda: "error-signature breaker is off")
    signature = inp.signature
    if signature is None:
        return passed(state, ReasonCode.SIGNATURE_OPEN, lambda: "the failure has no signature")
    now = inp.now
    found = signature_state(breaker, inp.signature_sightings, now)
    window = format_duration(breaker.window)
    seen = (
        f"{found.executions} execution{plural(found.executions)} of {found.jobs} "
        f"job{plural(found.jobs)} within {window}"
    )
    if not found.open:
        return passed(
            state,
            ReasonCode.SIGNATURE_OPEN,
            lambda: (
                f"signature {signature_text(signature)} closed: {seen} (opens at "
                f"{breaker.executions} executions of {breaker.jobs} jobs)"
            ),
        )
    until = found.until or now
    shown = signature_text(signature)
    return Gate(
        Check(
            ReasonCode.SIGNATURE_OPEN,
            False,
            f"signature {shown} open until {at_time(until, now)}: {seen}",
        ),
        f"held: signature {shown} open until {at_time(until, now)} ({seen})",
        held_until=until,
    )


def breaker_gate(policy: Policy, inp: DecisionInput, state: GateState) -> Gate:
    now = inp.now
    breaker = policy.circuit_breaker
    if breaker is None:
        return passed(state, ReasonCode.BREAKER_OPEN, lambda: "circuit breaker is off")
    found = breaker_state(breaker, inp.restart_outcomes, now)
    window = format_duration(breaker.window)
    if not found.open:
        return passed(
            state,
            ReasonCode.BREAKER_OPEN,
            lambda: (
                f"circuit breaker closed: {found.failed} of {found.total} restarts within "
                f"{window} failed again"
            ),
        )
    until = at_time(found.until or now, now)
    return Gate(
        Check(
            ReasonCode.BREAKER_OPEN,
            False,
            f"circuit breaker open until {until}: {found.failed} of {found.total} restarts "
            f"within {window} failed again",
        ),
        f"skip: circuit breaker open until {until} ({found.failed} of {found.total} "
        f"restarts within {window} failed again)",
    )


def deadline_gate(settings: Settings, inp: DecisionInput, state: GateState) -> Gate:
    deadline = settings.deadline
    if deadline is None:
        return passed(state, ReasonCode.DEADLINE, lambda: "no deadline")
    now = inp.now
    due_at = state.due_at or now
    deadline_at = inp.first_failure_at + deadline
    if due_at <= deadline_at:
        return passed(
            state,
            ReasonCode.DEADLINE,
            lambda: (
                f"due at {at_time(due_at, now)}, within the deadline {format_duration(deadline)} "
                f"after the first failure ({at_time(deadline_at, now)})"
            ),
        )
    span = format_duration(deadline)
    detail = (
        f"due at {at_time(due_at, now)}, after the deadline {span} after the first failure "
        f"({at_time(deadline_at, now)})"
    )
    if now >= deadline_at:
        reason = (
            f"skip: deadline {span} after the first failure passed at {at_time(deadline_at, now)}"
        )
    else:
        reason = (
            f"skip: the restart would be due at {at_time(due_at, now)}, after the deadline "
            f"{span} after the first failure ({at_time(deadline_at, now)})"
        )
    return Gate(Check(ReasonCode.DEADLINE, False, detail), reason)


def _hostgates(
    policy: Policy,
    inp: DecisionInput,
    settings: Settings,
    rule: Rule | None,
    qualifying: tuple[FailedHost, ...],
    hosts: tuple[FailedHost, ...],
    state: GateState,
) -> Iterator[Gate]:
    now = inp.now
    limit = policy.limits.per_host

    def quarantine_of(host: FailedHost) -> ExcludedHost | None:
        if limit is None:
            return None
        until = quarantined_until(limit, inp.host_failure_times.get(host.host, ()), now)
        if until is None:
            return None
        return ExcludedHost(
            host.host,
            ReasonCode.QUARANTINE,
            f"quarantined until {at_time(until, now)} ({limit.failures} "
            f"failure{plural(limit.failures)} within {format_duration(limit.window)})",
        )

    def unsafe_of(host: FailedHost) -> ExcludedHost | None:
        if not settings.require_unchanged or host.changed == 0:
            return None
        if host.changed is None:
            if host.failure_class == "init_failure":
                return None  # it failed before Ansible ran, so nothing was changed
            why = "changed count unknown (require_unchanged)"
        else:
            count = host.changed
            why = f"changed {count} task{plural(count)} before failing (require_unchanged)"
        return ExcludedHost(host.host, ReasonCode.UNSAFE_CHANGED, why)

    if settings.hosts == "none":
        yield passed(
            state, ReasonCode.NO_FAILED_HOSTS, lambda: "hosts: none restarts without a host list"
        )
        held = [e for e in map(quarantine_of, hosts) if e is not None]
        changed = [e for e in map(unsafe_of, hosts) if e is not None]
        state.excluded = held + changed
        note = ", and hosts: none cannot leave hosts out"
        yield gate_for_all(
            ReasonCode.QUARANTINE, held, "quarantined", "no failed host is quarantined", note
        )
        yield gate_for_all(
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
            yield passed(
                state,
                ReasonCode.NO_FAILED_HOSTS,
                lambda: "INIT_FAILURE without failed hosts: restart with no host list",
            )
        else:
            yield Gate(
                Check(ReasonCode.NO_FAILED_HOSTS, False, "no failed hosts are known"),
                f"skip: no failed hosts are known to restart (hosts: {settings.hosts})",
            )
        yield passed(state, ReasonCode.QUARANTINE, lambda: "no failed hosts to check")
        yield passed(state, ReasonCode.UNSAFE_CHANGED, lambda: "no failed hosts to check")
        state.hosts = ()
        return

    yield passed(
        state, ReasonCode.NO_FAILED_HOSTS, lambda: f"{len(hosts)} failed host{plural(len(hosts))}"
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

    survivors: list[FailedHost] = []
    quarantined: list[ExcludedHost] = []
    for host in targets:
        excluded = quarantine_of(host)
        if excluded is None:
            survivors.append(host)
        else:
            quarantined.append(excluded)
    state.excluded.extend(quarantined)
    if survivors or not quarantined:
        yield passed(
            state,
            ReasonCode.QUARANTINE,
            lambda: (
                f"{len(quarantined)} of {len(targets)} host{plural(len(targets))} quarantined"
                if limit is not None
                else "per-host limit is off"
            ),
        )
    else:
        yield gate_for_all(ReasonCode.QUARANTINE, quarantined, "quarantined", "")
        if not state.explain:
            return
        survivors = list(targets)

    safe: list[FailedHost] = []
    unsafe: list[ExcludedHost] = []
    for host in survivors:
        excluded = unsafe_of(host)
        if excluded is None:
            safe.append(host)
        else:
            unsafe.append(excluded)
    state.excluded.extend(unsafe)
    if not settings.require_unchanged:
        yield passed(state, ReasonCode.UNSAFE_CHANGED, lambda: "require_unchanged is off")
    elif safe:
        yield passed(
            state,
            ReasonCode.UNSAFE_CHANGED,
            lambda: f"{len(safe)} of {len(survivors)} host{plural(len(survivors))} changed nothing",
        )
    else:
        yield gate_for_all(
            ReasonCode.UNSAFE_CHANGED, unsafe, "unsafe to restart under require_unchanged", ""
        )
    state.hosts = tuple(h.host for h in safe)


def passed(state: GateState, code: str, detail: Callable[[], str]) -> Gate:
    """A gate that passed; its detail is only worked out for an explanation."""
    return Gate(Check(code, True, detail() if state.explain else ""))


def gate_for_all(
    code: str, blocking: list[ExcludedHost], what: str, fine: str, note: str = ""
) -> Gate:
    """A gate that fails when any host is in ``blocking``."""
    if not blocking:
        return Gate(Check(code, True, fine))
    details = "; ".join(f"{e.host}: {e.reason}" for e in blocking[:MAX_LISTED])
    if len(blocking) > MAX_LISTED:
        details += f"; and {len(blocking) - MAX_LISTED} more"
    if len(blocking) == 1:
        sentence = f"skip: host {blocking[0].host}: {blocking[0].reason}{note}"
    else:
        names = name_list([e.host for e in blocking])
        sentence = f"skip: {len(blocking)} hosts are {what}: {names}{note}"
    return Gate(Check(code, False, details), sentence)


def budget_gate(state: GateState, code: str, budget: Budget | None, used: int, label: str) -> Gate:
    if budget is None:
        return passed(state, code, lambda: f"{label} budget is off")
    window = format_duration(budget.window)
    if used < budget.restarts:
        return passed(
            state,
            code,
            lambda: f"{label} budget: {used} of {budget.restarts} restarts used within {window}",
        )
    detail = f"{label} budget: {used} of {budget.restarts} restarts used within {window}"
    return Gate(
        Check(code, False, detail),
        f"skip: {label} budget of {budget.restarts} restart{plural(budget.restarts)} per {window} "
        "is used up",
    )
