"""``decide_restart``: one failed execution in, one decision out.

Pure: the time, the budget usage and the histories are inputs, so the same input always gives
the same decision (the backoff jitter is derived from the execution id and attempt number).
"""

from __future__ import annotations

from datetime import datetime

from app.policy.durations import format_seconds
from app.policy.gates import GateState, gates, signature_text
from app.policy.matching import FailedHost, first_match, match_rule, prepare_hosts
from app.policy.model import (
    NO_RULE,
    Decision,
    DecisionInput,
    Explanation,
    Policy,
    ReasonCode,
    Rule,
    RuleTrace,
    Settings,
    Verdict,
)
from app.policy.text import at_time, by_rule, full_time, plural
from app.policy.timing import backoff_delay, breaker_state, quarantined_until

__all__ = [
    "backoff_delay",
    "breaker_state",
    "decide_restart",
    "explain_decision",
    "format_explanation",
    "quarantined_until",
]


def decide_restart(policy: Policy, inp: DecisionInput) -> Decision:
    """Whether, when and against which hosts to restart this failed execution."""
    hosts = prepare_hosts(inp)
    rule, qualifying = first_match(policy.rules, inp, hosts)
    state = GateState()
    for gate in gates(policy, inp, rule, qualifying, hosts, state):
        if gate.check.passed:
            continue
        if gate.held_until is not None:
            return _decision(
                policy, inp, rule, state, "held", gate.check.code, gate.reason, gate.held_until
            )
        return _decision(policy, inp, rule, state, "skip", gate.check.code, gate.reason)
    settings = rule.settings if rule is not None else policy.defaults
    sentence = _restart_sentence(inp, rule, settings, state, len(hosts))
    return _decision(policy, inp, rule, state, "restart", ReasonCode.RESTART, sentence)


def explain_decision(policy: Policy, inp: DecisionInput) -> Explanation:
    """The decision, every rule's match with its reasons, and every gate's outcome."""
    decision = decide_restart(policy, inp)
    hosts = prepare_hosts(inp)
    traces: list[RuleTrace] = []
    chosen: Rule | None = None
    chosen_hosts: tuple[FailedHost, ...] = hosts
    for rule in policy.rules:
        matched, qualifying, reasons = match_rule(rule.when, inp, hosts, explain=True)
        if matched and chosen is not None:
            reasons.append(f"not used: rule {chosen.name} matched first")
        traces.append(RuleTrace(rule.name, matched, tuple(reasons)))
        if matched and chosen is None:
            chosen, chosen_hosts = rule, qualifying
    state = GateState(explain=True)
    checks = tuple(gate.check for gate in gates(policy, inp, chosen, chosen_hosts, hosts, state))
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
    if decision.due_at is not None and decision.deferred_by is not None:
        due = full_time(decision.due_at)
        lines.append(f"deferred: until {due} by blackout {decision.deferred_by}")
    if decision.held_until is not None:
        lines.append(f"held:     until {full_time(decision.held_until)} at least")
    if decision.signature is not None:
        signature = decision.signature
        lines.append(f"signature: {signature_text(signature)} [{signature.key}]")
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
    decided = False
    for check in explanation.checks:
        mark = "ok  " if check.passed else "FAIL"
        if not check.passed and check.code == ReasonCode.SIGNATURE_OPEN:
            mark = "HOLD"
        lines.append(f"  {mark} {check.code}: {check.detail}")
        if not check.passed and not decided and check is not explanation.checks[-1]:
            # The engine stops at the first check that fails; the rest are what would also
            # stand in the way (or not), not part of this decision.
            decided = True
            lines.append(f"  ---- {check.code} decides; the checks below are for information")
    return "\n".join(lines)


# --- the decision -------------------------------------------------------------------------------


def _decision(
    policy: Policy,
    inp: DecisionInput,
    rule: Rule | None,
    state: GateState,
    action: Verdict,
    code: str,
    reason: str,
    held_until: datetime | None = None,
) -> Decision:
    """A skip has no hosts, due time or backoff; a held restart has those it would have had."""
    queued = action != "skip"
    return Decision(
        action=action,
        hosts=state.hosts if queued else (),
        excluded_hosts=tuple(state.excluded),
        due_at=state.due_at if queued else None,
        backoff_seconds=state.delay if queued else None,
        rule=rule.name if rule is not None else NO_RULE,
        reason_code=code,
        reason=reason,
        policy_version=policy.version_hash,
        attempt=inp.prior_restarts + 1,
        deferred_by=state.deferred_by if queued else None,
        signature=inp.signature,
        held_until=held_until,
    )


def _restart_sentence(
    inp: DecisionInput, rule: Rule | None, settings: Settings, state: GateState, failed: int
) -> str:
    if state.hosts:
        what = f"restart {len(state.hosts)} of {failed} host{plural(failed)}"
    elif settings.hosts == "none":
        what = "restart all hosts (no host list)"
    else:
        what = "restart with no host list"
    due = at_time(state.due_at or inp.now, inp.now)
    when = f"at {due}"
    if state.deferred_by is not None:
        when = f"deferred until {due} (blackout {state.deferred_by})"
    backoff = format_seconds(state.delay or 0.0)
    attempt = f"attempt {inp.prior_restarts + 1} of {settings.max_restarts}"
    return f"{what} {when} by {by_rule(rule)} ({attempt}, backoff {backoff})"
