"""Properties that hold for any policy and any sequence of failures."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.policy import (
    REASON_CODES,
    Backoff,
    BudgetUsage,
    CircuitBreaker,
    DecisionInput,
    HostFailure,
    HostLimit,
    Policy,
    PolicyError,
    RestartOutcome,
    backoff_delay,
    breaker_state,
    decide_restart,
    explain_decision,
    parse_policy,
    quarantined_until,
)
from app.policy.loader import (
    BACKOFF_KEYS,
    BREAKER_KEYS,
    BUDGET_KEYS,
    LIMITS_KEYS,
    PER_HOST_KEYS,
    RULE_KEYS,
    TOP_KEYS,
    WHEN_KEYS,
)

from .helpers import NOW

PROPERTY = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])

HOSTS = ("web1", "web2", "web3", "db1")
CLASSES = ("unreachable", "task_failed", "async_failed", "init_failure", "unknown", "odd")
MESSAGES = ("", "ssh: Connection timed out", "non-zero return code", "connection reset by peer")


# --- strategies -------------------------------------------------------------------------------


def _budget(maximum: int) -> st.SearchStrategy[dict[str, Any] | None]:
    return st.none() | st.fixed_dictionaries(
        {"restarts": st.integers(0, maximum), "window": st.integers(60, 3600)}
    )


@st.composite
def _rule(draw: st.DrawFn, name: str) -> dict[str, Any]:
    when: dict[str, Any] = {}
    if draw(st.booleans()):
        when["host"] = draw(st.sampled_from(["web*", "db*", "*", "web1"]))
    if draw(st.booleans()):
        when["failure"] = draw(st.lists(st.sampled_from(CLASSES[:5]), min_size=1, max_size=2))
    if draw(st.booleans()):
        when["message"] = draw(st.sampled_from(["(?i)timed out", "reset", "^$", "code"]))
    if draw(st.booleans()):
        when["status"] = draw(st.sampled_from([["FAILURE"], ["INIT_FAILURE"]]))
    if draw(st.booleans()):
        when["job"] = draw(st.sampled_from(["job-1", "job-*", "nothing"]))
    rule: dict[str, Any] = {"name": name, "when": when}
    if draw(st.booleans()):
        rule["action"] = draw(st.sampled_from(["restart", "skip"]))
    if draw(st.booleans()):
        rule["max_restarts"] = draw(st.integers(0, 6))
    if draw(st.booleans()):
        rule["hosts"] = draw(st.sampled_from(["failed", "all_failed", "none"]))
    if draw(st.booleans()):
        rule["require_unchanged"] = draw(st.booleans())
    return rule


@st.composite
def policies(draw: st.DrawFn, *, limits: bool = True) -> Policy:
    initial = draw(st.integers(0, 300))
    document: dict[str, Any] = {
        "version": 1,
        "defaults": {
            "max_restarts": draw(st.integers(0, 6)),
            "hosts": draw(st.sampled_from(["failed", "all_failed", "none"])),
            "require_unchanged": draw(st.booleans()),
            "deadline": draw(st.sampled_from([None, "30m", "6h"])),
            "backoff": {
                "initial": initial,
                "factor": draw(st.sampled_from([1, 1.5, 2, 3])),
                "max": initial + draw(st.integers(0, 1200)),
                "jitter": draw(st.sampled_from([0, 0.1, 0.5, 1])),
            },
        },
        "rules": [draw(_rule(f"rule-{i}")) for i in range(draw(st.integers(0, 3)))],
    }
    if limits:
        document["limits"] = {
            "per_job": draw(_budget(6)),
            "per_account": draw(_budget(8)),
            "global": draw(_budget(10)),
            "per_host": draw(
                st.none()
                | st.fixed_dictionaries(
                    {
                        "failures": st.integers(1, 4),
                        "window": st.integers(60, 7200),
                        "quarantine": st.integers(60, 7200),
                    }
                )
            ),
        }
        document["circuit_breaker"] = draw(
            st.none()
            | st.fixed_dictionaries(
                {
                    "failure_ratio": st.sampled_from([0.25, 0.5, 1]),
                    "min_restarts": st.integers(1, 5),
                    "window": st.integers(60, 3600),
                    "cool_down": st.integers(0, 3600),
                }
            )
        )
    return parse_policy(yaml.safe_dump(document, sort_keys=False))


host_failures = st.builds(
    HostFailure,
    host=st.sampled_from(HOSTS),
    failure_class=st.sampled_from(CLASSES),
    message=st.sampled_from(MESSAGES),
    changed=st.sampled_from([None, 0, 0, 1, 3]),
)
minutes_ago = st.integers(-30, 600).map(lambda m: NOW - timedelta(minutes=m))


@st.composite
def inputs(draw: st.DrawFn) -> DecisionInput:
    hosts = tuple(draw(st.lists(host_failures, max_size=4)))
    history = {
        h.host: tuple(draw(st.lists(minutes_ago, max_size=6))) for h in hosts if draw(st.booleans())
    }
    return DecisionInput(
        execution_id=draw(st.sampled_from(["e-1", "e-2", "e-3"])),
        account=draw(st.sampled_from(["ACME", "XXXX"])),
        job_id=draw(st.sampled_from(["job-1", "job-2"])),
        job_description=draw(st.sampled_from([None, "deploy web", "db-migrate"])),
        status=draw(st.sampled_from(["FAILURE", "FAILURE", "INIT_FAILURE", "SUCCESS"])),
        run_index=0,
        run_count=1,
        first_failure_at=NOW - timedelta(minutes=draw(st.integers(0, 500))),
        now=NOW,
        failed_hosts=hosts,
        prior_restarts=draw(st.integers(0, 7)),
        usage=BudgetUsage(*(draw(st.integers(0, 12)) for _ in range(3))),
        host_failure_times=history,
        restart_outcomes=tuple(
            RestartOutcome(t, draw(st.booleans())) for t in draw(st.lists(minutes_ago, max_size=8))
        ),
        paused=draw(st.sampled_from([None, None, None, "job paused by alice"])),
    )


# --- properties -------------------------------------------------------------------------------


@PROPERTY
@given(policies(), inputs())
def test_same_inputs_give_the_same_decision(policy: Policy, inp: DecisionInput) -> None:
    decision = decide_restart(policy, inp)
    copy = DecisionInput(**{**inp.__dict__, "host_failure_times": dict(inp.host_failure_times)})
    assert decide_restart(policy, copy) == decision
    assert explain_decision(policy, inp).decision == decision


@PROPERTY
@given(policies(), inputs())
def test_decisions_are_well_formed(policy: Policy, inp: DecisionInput) -> None:
    decision = decide_restart(policy, inp)
    failed = {h.host for h in inp.failed_hosts}
    assert decision.reason_code in REASON_CODES
    assert set(decision.hosts) <= failed
    assert len(set(decision.hosts)) == len(decision.hosts)
    assert not set(decision.hosts) & {e.host for e in decision.excluded_hosts}
    assert decision.policy_version == policy.version_hash
    assert "\n" not in decision.reason
    if decision.restart:
        assert decision.reason_code == "restart"
        assert decision.due_at is not None and decision.backoff_seconds is not None
        assert decision.due_at >= inp.now
        assert inp.status in ("FAILURE", "INIT_FAILURE") and inp.paused is None
        rule = policy.rule(decision.rule)
        effective = rule.settings if rule is not None else policy.defaults
        assert inp.prior_restarts < effective.max_restarts
        assert effective.action == "restart"
    else:
        assert decision.hosts == () and decision.due_at is None


@PROPERTY
@given(policies(), inputs())
def test_quarantined_hosts_are_never_restarted(policy: Policy, inp: DecisionInput) -> None:
    limit = policy.limits.per_host
    decision = decide_restart(policy, inp)
    if limit is None:
        return
    for name in decision.hosts:
        times = [t for t in inp.host_failure_times.get(name, ()) if t <= inp.now]
        for t in times:
            inside = sum(1 for u in times if t - limit.window < u <= t)
            assert not (inside >= limit.failures and inp.now < t + limit.quarantine)


@PROPERTY
@given(policies(), inputs())
def test_require_unchanged_never_restarts_a_changed_host(
    policy: Policy, inp: DecisionInput
) -> None:
    decision = decide_restart(policy, inp)
    rule = policy.rule(decision.rule)
    effective = rule.settings if rule is not None else policy.defaults
    if not (decision.restart and effective.require_unchanged):
        return
    by_name: dict[str, HostFailure] = {}
    for failure in inp.failed_hosts:
        by_name.setdefault(failure.host, failure)
    for name in decision.hosts:
        failure = by_name[name]
        assert failure.changed == 0 or (
            failure.changed is None and failure.failure_class == "init_failure"
        )
    if effective.hosts == "none":
        assert all(
            f.changed == 0 or (f.changed is None and f.failure_class == "init_failure")
            for f in inp.failed_hosts
        )


@PROPERTY
@given(
    st.integers(0, 3600),
    st.sampled_from([1, 1.1, 1.5, 2, 3, 10]),
    st.integers(0, 7200),
    st.floats(0, 1),
    st.text(max_size=20),
)
def test_backoff_never_shrinks_and_never_passes_max(
    initial: int, factor: float, extra: int, jitter: float, execution_id: str
) -> None:
    backoff = Backoff(
        initial=timedelta(seconds=initial),
        factor=factor,
        max=timedelta(seconds=initial + extra),
        jitter=jitter,
    )
    delays = [backoff_delay(backoff, execution_id, n) for n in range(12)]
    assert all(0 <= d <= backoff.max.total_seconds() for d in delays)
    assert delays == sorted(delays)
    assert delays == [backoff_delay(backoff, execution_id, n) for n in range(12)]


@PROPERTY
@given(policies(limits=False), st.lists(host_failures, min_size=1, max_size=3), st.text(max_size=8))
def test_backoff_through_decisions_never_shrinks(
    policy: Policy, hosts: list[HostFailure], execution_id: str
) -> None:
    previous = 0.0
    for prior in range(8):
        inp = DecisionInput(
            execution_id,
            "ACME",
            "job-1",
            None,
            "FAILURE",
            prior,
            prior + 1,
            NOW - timedelta(days=300),
            NOW,
            tuple(hosts),
            prior_restarts=prior,
        )
        decision = decide_restart(policy, inp)
        if decision.backoff_seconds is None:
            continue
        rule = policy.rule(decision.rule)
        effective = rule.settings if rule is not None else policy.defaults
        assert decision.backoff_seconds <= effective.backoff.max.total_seconds()
        if rule is None or all(r.settings.backoff == effective.backoff for r in policy.rules):
            assert decision.backoff_seconds >= previous
            previous = decision.backoff_seconds


@PROPERTY
@given(
    policies(limits=False),
    st.lists(st.tuples(host_failures, st.sampled_from(["FAILURE", "INIT_FAILURE"])), max_size=12),
)
def test_never_more_than_max_restarts(policy: Policy, runs: list[tuple[HostFailure, str]]) -> None:
    """One execution failing run after run: respawn restarts it at most max_restarts times."""
    restarts = 0
    for index, (failure, status) in enumerate(runs):
        inp = DecisionInput(
            "e-1",
            "ACME",
            "job-1",
            None,
            status,
            index,
            index + 1,
            NOW - timedelta(days=300),
            NOW + timedelta(hours=index),
            (failure,),
            prior_restarts=restarts,
        )
        decision = decide_restart(policy, inp)
        if decision.restart:
            restarts += 1
            rule = policy.rule(decision.rule)
            effective = rule.settings if rule is not None else policy.defaults
            assert restarts <= effective.max_restarts
    everywhere = [policy.defaults.max_restarts, *(r.settings.max_restarts for r in policy.rules)]
    assert restarts <= max(everywhere)
    if not policy.rules:
        assert restarts <= policy.defaults.max_restarts


@st.composite
def failure_feeds(draw: st.DrawFn) -> list[tuple[int, int, int]]:
    """(seconds since the previous failure, job, execution) for a stream of failures."""
    return draw(
        st.lists(
            st.tuples(st.integers(0, 900), st.integers(0, 3), st.integers(0, 5)),
            max_size=40,
        )
    )


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(policies(), failure_feeds())
def test_no_budget_is_ever_exceeded(policy: Policy, feed: list[tuple[int, int, int]]) -> None:
    """A caller counting restarts as documented never goes over any budget window."""
    limits = policy.limits
    made: list[tuple[datetime, str, str]] = []  # (decided at, job, account)
    prior: dict[str, int] = defaultdict(int)
    now = NOW

    def used(window: timedelta | None, job: str | None, account: str | None) -> int:
        if window is None:
            return 0
        return sum(
            1
            for at, j, a in made
            if now - window < at <= now
            and (job is None or j == job)
            and (account is None or a == account)
        )

    for gap, job_index, execution_index in feed:
        now = now + timedelta(seconds=gap)
        job = f"job-{job_index}"
        account = "ACME" if job_index % 2 else "XXXX"
        execution = f"{job}-e{execution_index}"
        inp = DecisionInput(
            execution,
            account,
            job,
            None,
            "FAILURE",
            0,
            1,
            now,
            now,
            (HostFailure(f"h{execution_index}", "task_failed", "", 0),),
            prior_restarts=prior[execution],
            usage=BudgetUsage(
                per_job=used(limits.per_job.window if limits.per_job else None, job, None),
                per_account=used(
                    limits.per_account.window if limits.per_account else None, None, account
                ),
                global_=used(limits.global_.window if limits.global_ else None, None, None),
            ),
        )
        if decide_restart(policy, inp).restart:
            made.append((now, job, account))
            prior[execution] += 1

    for at, job, account in made:
        for budget, job_only, account_only in (
            (limits.per_job, job, None),
            (limits.per_account, None, account),
            (limits.global_, None, None),
        ):
            if budget is None:
                continue
            inside = sum(
                1
                for t, j, a in made
                if at - budget.window < t <= at
                and job_only in (None, j)
                and account_only in (None, a)
            )
            assert inside <= budget.restarts


@PROPERTY
@given(
    st.lists(st.tuples(st.integers(0, 120), st.booleans()), max_size=25),
    st.sampled_from([0.25, 0.5, 0.75, 1.0]),
    st.integers(1, 6),
    st.integers(1, 30),
    st.integers(0, 30),
)
def test_breaker_matches_a_minute_by_minute_oracle(
    spec: list[tuple[int, bool]], ratio: float, minimum: int, window: int, cool_down: int
) -> None:
    """With whole-minute times, checking every minute finds exactly what the engine finds."""
    breaker = CircuitBreaker(
        ratio, minimum, timedelta(minutes=window), timedelta(minutes=cool_down)
    )
    found = tuple(RestartOutcome(NOW - timedelta(minutes=m), f) for m, f in spec)

    def holds(at: datetime) -> bool:
        inside = [o for o in found if at - breaker.window < o.at <= at]
        failed = sum(1 for o in inside if o.failed_again)
        return len(inside) >= minimum and failed / len(inside) >= ratio

    expected = holds(NOW) or any(
        holds(NOW - timedelta(minutes=m))
        and NOW - timedelta(minutes=m - 1) + breaker.cool_down > NOW
        for m in range(1, 200)
    )
    assert breaker_state(breaker, found, NOW).open is expected


@PROPERTY
@given(
    st.lists(st.integers(-10, 600), max_size=12),
    st.integers(1, 5),
    st.integers(1, 240),
    st.integers(1, 240),
)
def test_quarantine_matches_its_definition(
    ago: list[int], failures: int, window: int, quarantine: int
) -> None:
    limit = HostLimit(failures, timedelta(minutes=window), timedelta(minutes=quarantine))
    times = [NOW - timedelta(minutes=m) for m in ago]
    past = [t for t in times if t <= NOW]
    ends = [
        t + limit.quarantine
        for t in past
        if sum(1 for u in past if t - limit.window < u <= t) >= failures
        and t + limit.quarantine > NOW
    ]
    assert quarantined_until(limit, times, NOW) == (max(ends) if ends else None)


# --- the loader never crashes -----------------------------------------------------------------

yaml_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-5, 5000)
    | st.floats(allow_nan=True)
    | st.sampled_from(["30s", "1h30m", "restart", "skip", "none", "failed", "(x", "*", "FAILURE"]),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                sorted(
                    {
                        *TOP_KEYS,
                        *RULE_KEYS,
                        *WHEN_KEYS,
                        *BACKOFF_KEYS,
                        *LIMITS_KEYS,
                        *BUDGET_KEYS,
                        *PER_HOST_KEYS,
                        *BREAKER_KEYS,
                        "bogus",
                    }
                )
            ),
            children,
            max_size=4,
        )
    ),
    max_leaves=12,
)


@PROPERTY
@given(yaml_values)
def test_any_yaml_gives_a_policy_or_a_policy_error(value: object) -> None:
    text = yaml.safe_dump(value)
    try:
        parsed = parse_policy(text)
    except PolicyError as error:
        assert error.problems
        assert all(p.line >= 1 and p.message for p in error.problems)
    else:
        assert parsed.schema_version == 1


@PROPERTY
@given(st.text(max_size=200))
def test_any_text_gives_a_policy_or_a_policy_error(text: str) -> None:
    try:
        parse_policy(text)
    except PolicyError as error:
        assert error.problems
