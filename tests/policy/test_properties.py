"""Properties that hold for any policy and any sequence of failures."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from app.policy import (
    REASON_CODES,
    Backoff,
    Blackout,
    BudgetUsage,
    CircuitBreaker,
    DecisionInput,
    HostFailure,
    HostLimit,
    Policy,
    PolicyError,
    RestartOutcome,
    Schedule,
    Sighting,
    SignatureBreaker,
    backoff_delay,
    blackout_at,
    breaker_state,
    decide_restart,
    explain_decision,
    failure_signature,
    normalise_message,
    parse_policy,
    quarantined_until,
    signature_state,
)
from app.policy.loader import (
    BACKOFF_KEYS,
    BREAKER_KEYS,
    BUDGET_KEYS,
    FAILED_HOSTS_KEYS,
    LIMITS_KEYS,
    PER_HOST_KEYS,
    PER_SIGNATURE_KEYS,
    RULE_KEYS,
    TOP_KEYS,
    WHEN_KEYS,
)
from app.policy.schedule_reader import BLACKOUT_KEYS, SCHEDULE_KEYS

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
    if draw(st.integers(0, 3)) == 0:
        when["failed_hosts"] = draw(
            st.sampled_from([{"ratio_over": 0.5}, {"min": 2}, {"max": 1}, {"min": 1, "max": 3}])
        )
    rule: dict[str, Any] = {"name": name, "when": when}
    if draw(st.booleans()):
        rule["action"] = draw(st.sampled_from(["restart", "skip"]))
    if draw(st.booleans()):
        rule["max_restarts"] = draw(st.integers(0, 6))
    if draw(st.booleans()):
        rule["hosts"] = draw(st.sampled_from(["failed", "all_failed", "none"]))
    if draw(st.booleans()):
        rule["require_unchanged"] = draw(st.booleans())
    if draw(st.integers(0, 3)) == 0:
        rule["ignore_blackouts"] = draw(st.booleans())
    return rule


def _clock(draw: st.DrawFn) -> str:
    return f"{draw(st.integers(0, 23)):02}:{draw(st.sampled_from([0, 15, 30, 45])):02}"


@st.composite
def _blackout(draw: st.DrawFn, name: str) -> dict[str, Any]:
    start = _clock(draw)
    end = draw(st.sampled_from(["24:00", _clock(draw)]))
    assume(start != end)
    blackout: dict[str, Any] = {"name": name, "from": start, "to": end}
    if draw(st.booleans()):
        days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
        blackout["days"] = draw(st.lists(st.sampled_from(days), min_size=1, max_size=3))
    if draw(st.booleans()):
        blackout["tz"] = draw(st.sampled_from(["UTC", "Europe/Berlin", "America/New_York"]))
    return blackout


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
    if draw(st.booleans()):
        blackouts = [draw(_blackout(f"b{i}")) for i in range(draw(st.integers(1, 2)))]
        document["schedule"] = {"blackouts": blackouts}
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
                    "per_signature": st.none()
                    | st.fixed_dictionaries(
                        {
                            "executions": st.integers(1, 4),
                            "jobs": st.integers(1, 3),
                            "window": st.integers(60, 3600),
                            "cool_down": st.integers(0, 3600),
                        }
                    ),
                }
            )
        )
    try:
        return parse_policy(yaml.safe_dump(document, sort_keys=False))
    except PolicyError:  # blackouts that cover the whole week
        assume(False)
        raise


host_failures = st.builds(
    HostFailure,
    host=st.sampled_from(HOSTS),
    failure_class=st.sampled_from(CLASSES),
    message=st.sampled_from(MESSAGES),
    changed=st.sampled_from([None, 0, 0, 1, 3]),
)
minutes_ago = st.integers(-30, 600).map(lambda m: NOW - timedelta(minutes=m))
sightings = st.builds(
    Sighting,
    at=st.integers(-5, 60).map(lambda m: NOW - timedelta(minutes=m)),
    execution_id=st.sampled_from(["e-1", "e-2", "e-3", "e-4", "e-5"]),
    job_id=st.sampled_from(["job-1", "job-2", "job-3"]),
)


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
        run_host_count=draw(st.none() | st.integers(0, 8)),
        signature=failure_signature(hosts) if draw(st.booleans()) else None,
        signature_sightings=tuple(draw(st.lists(sightings, max_size=8))),
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
    assert decision.signature == inp.signature
    if decision.queued:
        if decision.restart:
            assert decision.reason_code == "restart" and decision.held_until is None
        else:
            assert decision.reason_code == "signature_open" and decision.reason.startswith("held")
            assert decision.held_until is not None and decision.held_until > inp.now
        assert decision.due_at is not None and decision.backoff_seconds is not None
        assert decision.due_at >= inp.now
        assert inp.status in ("FAILURE", "INIT_FAILURE") and inp.paused is None
        rule = policy.rule(decision.rule)
        effective = rule.settings if rule is not None else policy.defaults
        assert inp.prior_restarts < effective.max_restarts
        assert effective.action == "restart"
        if effective.deadline is not None:
            assert decision.due_at <= inp.first_failure_at + effective.deadline
        if decision.deferred_by is not None:
            assert decision.due_at > inp.now + timedelta(seconds=decision.backoff_seconds)
        else:
            assert decision.due_at == inp.now + timedelta(seconds=decision.backoff_seconds)
        if not effective.ignore_blackouts:  # never due inside a blackout
            assert blackout_at(policy.schedule, decision.due_at) is None
    else:
        assert decision.hosts == () and decision.due_at is None
        assert decision.deferred_by is None and decision.held_until is None
        assert decision.reason.startswith("skip")


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
        by_name.setdefault(failure.host, failure)  # a host listed twice counts once, the first
    for name in decision.hosts:
        failure = by_name[name]
        assert failure.changed == 0 or (
            failure.changed is None and failure.failure_class == "init_failure"
        )
    if effective.hosts == "none":
        assert all(
            f.changed == 0 or (f.changed is None and f.failure_class == "init_failure")
            for f in by_name.values()
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
    | st.sampled_from(
        [
            *("30s", "1h30m", "restart", "skip", "none", "failed", "(x", "*", "FAILURE"),
            *("23:00", "24:00", "mon", "Europe/Berlin", "Nowhere/Else"),
        ]
    ),
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
                        *FAILED_HOSTS_KEYS,
                        *PER_SIGNATURE_KEYS,
                        *SCHEDULE_KEYS,
                        *BLACKOUT_KEYS,
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


# --- the error-signature normaliser ------------------------------------------------------------

WORDS = st.text("ghijklmnopqrstuvwxyz", min_size=1, max_size=8)
"""Words the normaliser keeps: no digits, no dots, no hex letters."""
SEPARATORS = (" ", ": ", ", ", " - ", " = ", "; ", " (")
HEX = "0123456789abcdefABCDEF"
_port = st.integers(1, 65535).map(lambda p: f":{p}")
_label = st.from_regex(r"[a-z0-9](?:[a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True)
_top = st.sampled_from(["com", "net", "org", "internal", "example", "local", "cloud", "io"])

MASKED: dict[str, st.SearchStrategy[str]] = {
    "number": st.integers(0, 10**12).map(str)
    | st.tuples(st.integers(0, 999), st.integers(0, 999)).map(lambda t: f"{t[0]}.{t[1]}"),
    "uuid": st.uuids().map(str) | st.uuids().map(lambda u: str(u).upper()),
    "ipv4": st.tuples(st.ip_addresses(v=4).map(str), st.just("") | _port).map("".join),
    "ipv6": st.ip_addresses(v=6).map(str).filter(lambda a: a != "::")
    | st.tuples(st.ip_addresses(v=6).map(str), _port).map(lambda t: f"[{t[0]}]{t[1]}"),
    "hex": st.text(HEX, min_size=6, max_size=40).filter(
        lambda t: any(c.isdigit() for c in t) and any(c.isalpha() for c in t)
    )
    | st.text(HEX, min_size=1, max_size=12).map(lambda t: "0x" + t),
    "host": st.tuples(st.lists(_label, min_size=1, max_size=3), _top).map(
        lambda t: ".".join([*t[0], t[1]])
    ),
    "path": st.tuples(
        st.sampled_from(["'", '"']),
        st.sampled_from(["/", "./", "~/", "https://git.example.com/", "C:\\"]),
        st.text("abcxyz0123/._- ", max_size=30),
    ).map(lambda t: f"{t[0]}{t[1]}{t[2]}{t[0]}"),
}


Part = tuple[str, str, str]
"""(kind, text, separator): kind "word" for text the normaliser keeps, else a kind of
`MASKED`."""


@st.composite
def messages(draw: st.DrawFn) -> list[Part]:
    kinds = draw(st.lists(st.sampled_from(["word", *sorted(MASKED)]), min_size=1, max_size=8))
    return [
        (kind, draw(WORDS if kind == "word" else MASKED[kind]), draw(st.sampled_from(SEPARATORS)))
        for kind in kinds
    ]


def joined(parts: list[Part]) -> str:
    return "".join(text + separator for _, text, separator in parts)


@PROPERTY
@given(st.data(), messages())
def test_the_normaliser_ignores_what_it_masks(data: st.DataObject, parts: list[Part]) -> None:
    """Each masked part replaced by another of its kind: the same normalised message."""
    other = [
        (kind, text if kind == "word" else data.draw(MASKED[kind]), separator)
        for kind, text, separator in parts
    ]
    one, two = joined(parts), joined(other)
    assert normalise_message(one) == normalise_message(two), (one, two)


@PROPERTY
@given(st.data(), messages(), WORDS)
def test_the_normaliser_keeps_the_words(data: st.DataObject, parts: list[Part], word: str) -> None:
    """Two messages that differ in a word the normaliser keeps: different normalised text."""
    words = [i for i, (kind, _, _) in enumerate(parts) if kind == "word"]
    assume(words)
    index = data.draw(st.sampled_from(words))
    assume(parts[index][1] != word)
    changed = [*parts[:index], ("word", word, parts[index][2]), *parts[index + 1 :]]
    one, two = joined(parts), joined(changed)
    assert normalise_message(one) != normalise_message(two), (one, two)


# --- blackout windows, against a brute-force reading of the rules ------------------------------

ZONES = ("Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "UTC")
CHANGES = tuple(
    datetime(*moment, tzinfo=UTC)
    for moment in (
        (2024, 3, 31, 1, 0),  # Berlin, forward
        (2024, 10, 27, 1, 0),  # Berlin, back
        (2024, 3, 10, 7, 0),  # New York, forward
        (2024, 11, 3, 6, 0),  # New York, back
        (2024, 4, 6, 15, 0),  # Lord Howe, back half an hour
        (2024, 10, 5, 15, 30),  # Lord Howe, forward half an hour
        (2025, 3, 30, 1, 0),
        (2025, 11, 2, 6, 0),
    )
)
instants = st.one_of(
    st.tuples(st.sampled_from(CHANGES), st.integers(-3 * 86400, 3 * 86400)).map(
        lambda t: t[0] + timedelta(seconds=t[1])
    ),
    st.integers(0, 3 * 365 * 86400).map(
        lambda s: datetime(2024, 1, 1, tzinfo=UTC) + timedelta(seconds=s)
    ),
)
_hours = st.sampled_from([0, 1, 2, 3, 22, 23]) | st.integers(0, 23)
_minutes = st.sampled_from([0, 15, 30, 45]) | st.integers(0, 59)


@st.composite
def blackout_windows(draw: st.DrawFn, name: str, zone: str) -> Blackout:
    start = time(draw(_hours), draw(_minutes))
    end = draw(st.none() | st.builds(time, _hours, _minutes))
    assume(end != start)
    days = draw(st.just(frozenset(range(7))) | st.frozensets(st.integers(0, 6), min_size=1))
    return Blackout(name, days, start, end, zone, ZoneInfo(zone))


@st.composite
def schedules(draw: st.DrawFn) -> Schedule:
    zones = draw(st.lists(st.sampled_from(ZONES), min_size=1, max_size=3))
    if draw(st.booleans()):
        zones = [zones[0]] * len(zones)
    return Schedule(tuple(draw(blackout_windows(f"b{i}", z)) for i, z in enumerate(zones)))


def _local(moment: datetime, zone: ZoneInfo) -> datetime:
    return moment.astimezone(zone).replace(tzinfo=None)


def _instant(day: date, wall: time, zone: ZoneInfo, *, first: bool) -> datetime:
    """The rules read literally: every UTC instant showing this wall time (by trying each
    offset the zone has around it); the first or the last; none: the first minute after."""
    naive = datetime.combine(day, wall)
    offsets = {
        naive.replace(tzinfo=UTC).astimezone(zone).utcoffset() or timedelta(0)
        for naive in (naive - timedelta(days=1), naive, naive + timedelta(days=1))
    }
    shown = sorted(
        (naive - offset).replace(tzinfo=UTC)
        for offset in offsets
        if _local((naive - offset).replace(tzinfo=UTC), zone) == naive
    )
    if shown:
        return shown[0] if first else shown[-1]
    moment = min(naive - offset for offset in offsets).replace(tzinfo=UTC)
    while _local(moment, zone) <= naive:
        moment += timedelta(minutes=1)
    return moment


def _windows(schedule: Schedule, low: datetime, high: datetime) -> list[tuple[datetime, datetime]]:
    found = []
    for blackout in schedule.blackouts:
        day = low.astimezone(blackout.zone).date() - timedelta(days=2)
        while day <= high.astimezone(blackout.zone).date() + timedelta(days=1):
            if day.weekday() in blackout.days:
                start = _instant(day, blackout.start, blackout.zone, first=True)
                end_day = (
                    day
                    if blackout.end is not None and blackout.end > blackout.start
                    else (day + timedelta(days=1))
                )
                end = _instant(end_day, blackout.end or time(0), blackout.zone, first=False)
                if start < end:
                    found.append((start, end))
            day += timedelta(days=1)
    return found


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schedules(), instants)
def test_blackout_at_matches_its_definition(schedule: Schedule, at: datetime) -> None:
    found = blackout_at(schedule, at)
    assume(found is None or found.ends_at - at < timedelta(days=20))
    windows = _windows(schedule, at, found.ends_at if found else at)

    def inside(moment: datetime) -> bool:
        return any(start <= moment < end for start, end in windows)

    if found is None:
        assert not inside(at)
        return
    ends_at = found.ends_at
    assert at < ends_at
    assert inside(at)
    assert not inside(ends_at)
    span = ends_at - at
    assert all(inside(at + span * k / 32) for k in range(32))
    assert inside(ends_at - timedelta(seconds=1))
    # it ends at some window's `to`, read in its zone, unless the clock skipped that time
    assert any(
        _local(ends_at, b.zone).time() == (b.end or time(0))
        or (ends_at - timedelta(seconds=1)).astimezone(b.zone).utcoffset()
        != ends_at.astimezone(b.zone).utcoffset()
        for b in schedule.blackouts
    )
    # named after the first listed blackout covering `at`
    named = next(b for b in schedule.blackouts if b.name == found.name)
    assert any(start <= at < end for start, end in _windows(Schedule((named,)), at, at))


# --- the error-signature breaker ---------------------------------------------------------------

signature_sightings = st.lists(
    st.builds(
        Sighting,
        at=st.integers(-10, 120).map(lambda m: NOW - timedelta(minutes=m)),
        execution_id=st.sampled_from([f"e{n}" for n in range(8)]),
        job_id=st.sampled_from(["j1", "j2", "j3", "j4"]),
    ),
    max_size=25,
)
signature_breakers = st.builds(
    SignatureBreaker,
    executions=st.integers(1, 5),
    jobs=st.integers(1, 3),
    window=st.integers(1, 30).map(lambda m: timedelta(minutes=m)),
    cool_down=st.integers(0, 30).map(lambda m: timedelta(minutes=m)),
)


@PROPERTY
@given(signature_breakers, signature_sightings)
def test_signature_breaker_matches_a_minute_by_minute_oracle(
    breaker: SignatureBreaker, found: list[Sighting]
) -> None:
    """With whole-minute times, checking every minute finds exactly what the engine finds."""

    def holds(at: datetime) -> bool:
        inside = [s for s in found if at - breaker.window < s.at <= at]
        return (
            len({s.execution_id for s in inside}) >= breaker.executions
            and len({s.job_id for s in inside}) >= breaker.jobs
        )

    expected = holds(NOW) or any(
        holds(NOW - timedelta(minutes=m))
        and NOW - timedelta(minutes=m - 1) + breaker.cool_down > NOW
        for m in range(1, 200)
    )
    state = signature_state(breaker, found, NOW)
    assert state.open is expected
    assert (state.until is not None) is expected


@PROPERTY
@given(signature_breakers, signature_sightings, st.integers(-10, 120))
def test_another_sighting_never_closes_the_signature_breaker(
    breaker: SignatureBreaker, found: list[Sighting], ago: int
) -> None:
    before = signature_state(breaker, found, NOW)
    extra = Sighting(NOW - timedelta(minutes=ago), "e-new", "j-new")
    after = signature_state(breaker, [*found, extra], NOW)
    if before.open:
        assert after.open
        assert after.until is not None and before.until is not None
        assert after.until >= before.until


@PROPERTY
@given(signature_breakers, signature_sightings, st.integers(0, 120))
def test_the_signature_breaker_closes_when_nothing_new_is_seen(
    breaker: SignatureBreaker, found: list[Sighting], later: int
) -> None:
    """Without newer sightings: closed at `until` when the condition no longer held at `now`,
    and in any case once the last sighting left the window and the cool-down passed."""
    past = [s for s in found if s.at <= NOW]
    state = signature_state(breaker, past, NOW)
    if not state.open or state.until is None:
        return
    if state.until < NOW + breaker.cool_down:  # it stopped holding before now
        at = state.until + timedelta(minutes=later)
        assert not signature_state(breaker, past, at).open
    last = max(s.at for s in past)
    quiet = last + breaker.window + breaker.cool_down + timedelta(minutes=later)
    assert not signature_state(breaker, past, max(quiet, NOW)).open
