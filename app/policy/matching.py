"""Which rule matches a failure, and which of its failed hosts satisfy the rule."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from app.policy.model import FAILURE_CLASSES, DecisionInput, FailedShare, Rule, When
from app.policy.text import MAX_LISTED, glob_list, name_list, percent, plural, quote


@dataclass(frozen=True, slots=True)
class FailedHost:
    host: str
    failure_class: str
    message: str
    changed: int | None
    stand_in: bool = False
    """The stand-in for an execution without failed hosts: host globs never match it."""


def prepare_hosts(inp: DecisionInput) -> tuple[FailedHost, ...]:
    seen: set[str] = set()
    hosts: list[FailedHost] = []
    for failure in inp.failed_hosts:
        if failure.host in seen:
            continue
        seen.add(failure.host)
        failure_class = failure.failure_class.lower()
        if failure_class not in FAILURE_CLASSES:
            failure_class = "unknown"
        hosts.append(FailedHost(failure.host, failure_class, failure.message, failure.changed))
    return tuple(hosts)


def stand_in(inp: DecisionInput) -> FailedHost:
    failure_class = "init_failure" if inp.status.upper() == "INIT_FAILURE" else "unknown"
    return FailedHost("", failure_class, "", None, stand_in=True)


def first_match(
    rules: Sequence[Rule], inp: DecisionInput, hosts: tuple[FailedHost, ...]
) -> tuple[Rule | None, tuple[FailedHost, ...]]:
    for rule in rules:
        matched, qualifying, _ = match_rule(rule.when, inp, hosts, explain=False)
        if matched:
            return rule, qualifying
    return None, hosts


def host_matches(when: When, host: FailedHost) -> bool:
    if when.host and (host.stand_in or not any(g.matches(host.host) for g in when.host)):
        return False
    if when.failure and host.failure_class not in when.failure:
        return False
    return not when.message or any(p.search(host.message) for p in when.message)


def host_mismatch(when: When, host: FailedHost) -> str:
    name = "(no failed host)" if host.stand_in else host.host
    if when.host and (host.stand_in or not any(g.matches(host.host) for g in when.host)):
        return f"{name} does not match host {glob_list(when.host)}"
    if when.failure and host.failure_class not in when.failure:
        return f"{name}: failure {host.failure_class} is not in [{', '.join(when.failure)}]"
    patterns = " or ".join(repr(p.pattern) for p in when.message)
    return f"{name}: message {quote(host.message)} does not match {patterns}"


def run_share(failed: int, run_host_count: int | None) -> tuple[int, float] | None:
    """The run's host count and the share of it that failed, or None when the count is
    unknown. The failed hosts are hosts of the run even if its count says fewer."""
    if run_host_count is None:
        return None
    total = max(run_host_count, failed)
    return total, (failed / total if total else 0.0)


def share_holds(
    share: FailedShare, failed: int, run_host_count: int | None, *, explain: bool
) -> tuple[bool, list[str]]:
    """Whether ``when.failed_hosts`` holds for a run with ``failed`` failed hosts, and why
    (with ``explain``): one reason per bound."""
    holds = True
    reasons: list[str] = []
    counted = f"{failed} failed host{plural(failed)}"
    if share.min is not None:
        if failed >= share.min:
            reasons.append(f"{counted} is at least min {share.min}")
        else:
            holds = False
            reasons.append(f"{counted} is fewer than min {share.min}")
    if share.max is not None:
        if failed <= share.max:
            reasons.append(f"{counted} is at most max {share.max}")
        else:
            holds = False
            reasons.append(f"{counted} is more than max {share.max}")
    if share.ratio_over is not None:
        found = run_share(failed, run_host_count)
        limit = percent(share.ratio_over)
        if found is None:
            holds = False
            reasons.append("the run's host count is unknown: ratio_over cannot hold")
        else:
            total, ratio = found
            of = f"{failed} of {total} host{plural(total)} failed ({percent(ratio)})"
            if ratio > share.ratio_over:
                reasons.append(f"{of} is over {limit}")
            else:
                holds = False
                reasons.append(f"{of} is not over {limit}")
    return holds, reasons if explain else []


def match_rule(
    when: When, inp: DecisionInput, hosts: tuple[FailedHost, ...], *, explain: bool
) -> tuple[bool, tuple[FailedHost, ...], list[str]]:
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
                reasons.append(f"account {quote(inp.account)} matches {glob_list(when.account)}")
        else:
            if not explain:
                return False, (), reasons
            matched = False
            reasons.append(f"account {quote(inp.account)} does not match {glob_list(when.account)}")
    if when.job:
        names = [inp.job_id] if inp.job_description is None else [inp.job_id, inp.job_description]
        job = f"job {quote(inp.job_id)}"
        if inp.job_description is not None:
            job += f" (description {quote(inp.job_description)})"
        if any(g.matches(name) for g in when.job for name in names):
            if explain:
                reasons.append(f"{job} matches {glob_list(when.job)}")
        else:
            if not explain:
                return False, (), reasons
            matched = False
            reasons.append(f"{job} does not match {glob_list(when.job)}")
    if when.failed_hosts is not None:
        holds, why = share_holds(when.failed_hosts, len(hosts), inp.run_host_count, explain=explain)
        if not holds and not explain:
            return False, (), reasons
        matched = matched and holds
        reasons.extend(why)
    if not when.has_host_conditions:
        if explain and when.is_catch_all:
            reasons.append("no conditions: matches every failure")
        return matched, hosts, reasons
    pool = hosts or (stand_in(inp),)
    qualifying = tuple(h for h in pool if host_matches(when, h))
    if qualifying:
        if explain:
            names = [h.host for h in qualifying if not h.stand_in]
            if names:
                reasons.append(
                    f"{len(names)} of {len(pool)} failed hosts match the host conditions: "
                    f"{name_list(names)}"
                )
            else:
                reasons.append(
                    f"no failed hosts; the {status} failure counts as {pool[0].failure_class}"
                )
    else:
        matched = False
        if explain:
            misses = [host_mismatch(when, h) for h in pool[:MAX_LISTED]]
            more = f"; and {len(pool) - MAX_LISTED} more" if len(pool) > MAX_LISTED else ""
            reasons.append(f"no failed host matches: {'; '.join(misses)}{more}")
    return matched, tuple(h for h in qualifying if not h.stand_in), reasons
