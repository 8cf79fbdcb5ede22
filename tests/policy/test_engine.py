from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from app.policy import (
    REASON_CODES,
    Backoff,
    BudgetUsage,
    CircuitBreaker,
    DecisionInput,
    ExcludedHost,
    HostLimit,
    ReasonCode,
    RestartOutcome,
    Sighting,
    backoff_delay,
    breaker_state,
    decide_restart,
    explain_decision,
    failure_signature,
    format_explanation,
    quarantined_until,
)

from .helpers import NOW, host, make_input, minutes, policy

S = timedelta(seconds=1)
NO_JITTER = "defaults:\n  backoff: {jitter: 0}\n"


def one_rule(when: str) -> str:
    """A policy whose only rule, 'r', skips; an unmatched failure falls to the defaults."""
    return f"rules:\n  - name: r\n    action: skip\n    when: {when}\n"


# --- matching, one table row per rule key -----------------------------------------------------

WEB_TIMEOUT = host("web1", "unreachable", "ssh: Connection timed out", 0)
DB_FAILED = host("db1", "task_failed", "non-zero return code", 1)

MATCHING: list[tuple[str, str, dict[str, Any], bool]] = [
    # account: glob, case-sensitive, list = any
    ("account exact", "{account: ACME}", {}, True),
    ("account glob", "{account: 'AC*'}", {}, True),
    ("account other", "{account: XXXX}", {}, False),
    ("account case", "{account: acme}", {}, False),
    ("account list", "{account: [XXXX, 'A?ME']}", {}, True),
    # job: glob on the job id or on the description
    ("job id glob", "{job: '1111505e-*'}", {}, True),
    ("job description glob", "{job: 'deploy*'}", {}, True),
    ("job description case", "{job: 'Deploy*'}", {}, False),
    ("job no description", "{job: 'deploy*'}", {"job_description": None}, False),
    ("job neither", "{job: 'db-migrate*'}", {}, False),
    ("job list", "{job: ['db-*', '*web']}", {}, True),
    ("job glob class", "{job: 'deploy [wx]eb'}", {}, True),
    ("job glob whole", "{job: 'deploy'}", {}, False),
    # status, case-insensitive
    ("status failure", "{status: [FAILURE]}", {}, True),
    ("status lower", "{status: [failure]}", {"status": "FAILURE"}, True),
    ("status input lower", "{status: [FAILURE]}", {"status": "failure"}, True),
    ("status other", "{status: [INIT_FAILURE]}", {}, False),
    ("status init", "{status: [INIT_FAILURE]}", {"status": "INIT_FAILURE"}, True),
    # host: any failed host matches
    ("host any", "{host: 'db*'}", {"hosts": (WEB_TIMEOUT, DB_FAILED)}, True),
    ("host none", "{host: 'app*'}", {"hosts": (WEB_TIMEOUT, DB_FAILED)}, False),
    ("host case", "{host: 'WEB*'}", {"hosts": (WEB_TIMEOUT,)}, False),
    ("host without hosts", "{host: '*'}", {"hosts": ()}, False),
    # failure class
    ("failure match", "{failure: [unreachable]}", {"hosts": (WEB_TIMEOUT, DB_FAILED)}, True),
    ("failure miss", "{failure: [async_failed]}", {"hosts": (WEB_TIMEOUT, DB_FAILED)}, False),
    ("failure list", "{failure: [async_failed, task_failed]}", {"hosts": (DB_FAILED,)}, True),
    (
        "failure odd class is unknown",
        "{failure: [unknown]}",
        {"hosts": (host("h", "exploded"),)},
        True,
    ),
    (
        "failure input case",
        "{failure: [unreachable]}",
        {"hosts": (host("h", "UNREACHABLE"),)},
        True,
    ),
    (
        "init failure without hosts",
        "{failure: [init_failure]}",
        {"hosts": (), "status": "INIT_FAILURE"},
        True,
    ),
    ("failure without hosts is unknown", "{failure: [unknown]}", {"hosts": ()}, True),
    ("init_failure needs INIT_FAILURE", "{failure: [init_failure]}", {"hosts": ()}, False),
    # message: regex searched in each host's message
    ("message search", "{message: 'timed out'}", {"hosts": (WEB_TIMEOUT,)}, True),
    ("message case", "{message: 'TIMED OUT'}", {"hosts": (WEB_TIMEOUT,)}, False),
    ("message flag", "{message: '(?i)TIMED OUT'}", {"hosts": (WEB_TIMEOUT,)}, True),
    ("message anchored", "{message: '^ssh:'}", {"hosts": (WEB_TIMEOUT,)}, True),
    ("message list", "{message: [refused, 'timed out']}", {"hosts": (WEB_TIMEOUT,)}, True),
    (
        "message in the scanned prefix",
        "{message: 'needle'}",
        {"hosts": (host(message="x" * 4090 + "needle"),)},
        True,
    ),
    (
        "message past the scanned prefix",
        "{message: 'needle'}",
        {"hosts": (host(message="x" * 4096 + "needle"),)},
        False,
    ),
    ("message without hosts", "{message: '.*'}", {"hosts": ()}, True),
    # host conditions must hold for one and the same host
    (
        "host conditions on one host",
        "{failure: [unreachable], message: 'return code'}",
        {"hosts": (WEB_TIMEOUT, DB_FAILED)},
        False,
    ),
    (
        "host conditions together",
        "{host: 'web*', failure: [unreachable], message: 'timed'}",
        {"hosts": (DB_FAILED, WEB_TIMEOUT)},
        True,
    ),
    # execution and host conditions together
    ("all hold", "{account: ACME, job: 'deploy*', failure: [task_failed]}", {}, True),
    ("one fails", "{account: ACME, job: 'deploy*', failure: [unreachable]}", {}, False),
    # no conditions
    ("empty when", "{}", {}, True),
    ("null when", "null", {}, True),
]


@pytest.mark.parametrize(
    ("when", "fields", "matches"), [m[1:] for m in MATCHING], ids=[m[0] for m in MATCHING]
)
def test_rule_matching(when: str, fields: dict[str, Any], matches: bool) -> None:
    decision = decide_restart(policy(one_rule(when)), make_input(**fields))
    assert decision.rule == ("r" if matches else "defaults")
    if matches:
        assert decision.reason_code == ReasonCode.RULE_SKIP


def test_first_matching_rule_wins() -> None:
    body = """\
rules:
  - name: first
    when: {job: 'nothing*'}
  - name: second
    when: {account: ACME}
    max_restarts: 1
  - name: third
    max_restarts: 9
"""
    decision = decide_restart(policy(body), make_input(prior_restarts=1))
    assert (decision.rule, decision.reason_code) == ("second", "max_restarts")


# --- actions and gates ------------------------------------------------------------------------

QUARANTINED = {"web1": tuple(NOW - minutes(n) for n in range(5))}
OPEN_BREAKER = tuple(RestartOutcome(NOW - minutes(1), True) for _ in range(10))

INFRA_DOWN = (
    "rules:\n  - name: infra-down\n    when: {failed_hosts: {ratio_over: 0.5}}\n    action: skip\n"
)
SIX_OF_TEN = {"hosts": tuple(host(f"web{n}") for n in range(6)), "run_host_count": 10}
PER_SIGNATURE = "circuit_breaker:\n  per_signature: {executions: 5, jobs: 3}\n"
GIT_DOWN = failure_signature(
    [
        host(
            "web1",
            message="fatal: unable to access 'https://git.example.com/app.git/': Failed to "
            "connect to git.example.com port 443",
        )
    ]
)
SIGNATURE_OPEN = {
    "signature": GIT_DOWN,
    "signature_sightings": tuple(
        Sighting(NOW - minutes(n), f"exec-{n}", f"job-{n % 3}") for n in range(5)
    ),
}
BLACKOUT_NOW = "schedule:\n  blackouts: [{name: maintenance, from: '13:00', to: '21:00'}]\n"

GATES: list[tuple[str, str, dict[str, Any], str, str, tuple[str, ...]]] = [
    # (id, policy body, input, action, reason code, hosts)
    ("default restart", "", {}, "restart", "restart", ("web1",)),
    ("rule skip", one_rule("{job: 'deploy*'}"), {}, "skip", "rule_skip", ()),
    ("defaults skip", "defaults: {action: skip}", {}, "skip", "rule_skip", ()),
    ("not failed", "", {"status": "SUCCESS"}, "skip", "not_failed", ()),
    ("not failed killed", "", {"status": "KILLED"}, "skip", "not_failed", ()),
    ("lower-case failure", "", {"status": "failure"}, "restart", "restart", ("web1",)),
    ("paused", "", {"paused": "job paused by alice"}, "skip", "paused", ()),
    ("below max_restarts", "", {"prior_restarts": 2}, "restart", "restart", ("web1",)),
    ("max_restarts reached", "", {"prior_restarts": 3}, "skip", "max_restarts", ()),
    ("max_restarts passed", "", {"prior_restarts": 7}, "skip", "max_restarts", ()),
    ("max_restarts zero", "defaults: {max_restarts: 0}", {}, "skip", "max_restarts", ()),
    (
        "rule max_restarts",
        "rules: [{name: r, max_restarts: 5}]",
        {"prior_restarts": 4},
        "restart",
        "restart",
        ("web1",),
    ),
    (
        "deadline passed",
        "",
        {"first_failure_at": NOW - timedelta(hours=7)},
        "skip",
        "deadline",
        (),
    ),
    (
        "deadline passes during the backoff",
        NO_JITTER,
        {"first_failure_at": NOW - timedelta(hours=6) + 10 * S},
        "skip",
        "deadline",
        (),
    ),
    (
        "due exactly at the deadline",
        NO_JITTER,
        {"first_failure_at": NOW - timedelta(hours=6) + 30 * S},
        "restart",
        "restart",
        ("web1",),
    ),
    (
        "no deadline",
        "defaults: {deadline: null}",
        {"first_failure_at": NOW - timedelta(days=300)},
        "restart",
        "restart",
        ("web1",),
    ),
    ("no failed hosts", "", {"hosts": ()}, "skip", "no_failed_hosts", ()),
    (
        "init failure without hosts",
        "",
        {"hosts": (), "status": "INIT_FAILURE"},
        "restart",
        "restart",
        (),
    ),
    (
        "init failure with hosts",
        "",
        {"hosts": (host("web1", "init_failure", changed=None),), "status": "INIT_FAILURE"},
        "restart",
        "restart",
        ("web1",),
    ),
    ("hosts none", "defaults: {hosts: none}", {}, "restart", "restart", ()),
    (
        "hosts none without failed hosts",
        "defaults: {hosts: none}",
        {"hosts": ()},
        "restart",
        "restart",
        (),
    ),
    (
        "several failed hosts",
        "",
        {"hosts": (host("a"), host("b"), host("c"))},
        "restart",
        "restart",
        ("a", "b", "c"),
    ),
    (
        "duplicate hosts once",
        "",
        {"hosts": (host("a"), host("b"), host("a"))},
        "restart",
        "restart",
        ("a", "b"),
    ),
    (
        "host rule restarts its hosts",
        "rules: [{name: r, when: {failure: [unreachable]}}]",
        {"hosts": (WEB_TIMEOUT, DB_FAILED)},
        "restart",
        "restart",
        ("web1",),
    ),
    (
        "host rule with all_failed",
        "rules: [{name: r, hosts: all_failed, when: {failure: [unreachable]}}]",
        {"hosts": (WEB_TIMEOUT, DB_FAILED)},
        "restart",
        "restart",
        ("web1", "db1"),
    ),
    (
        "host rule with hosts none",
        "rules: [{name: r, hosts: none, when: {failure: [unreachable]}}]",
        {"hosts": (WEB_TIMEOUT, DB_FAILED)},
        "restart",
        "restart",
        (),
    ),
    (
        "job rule restarts every failed host",
        "rules: [{name: r, when: {job: 'deploy*'}}]",
        {"hosts": (WEB_TIMEOUT, DB_FAILED)},
        "restart",
        "restart",
        ("web1", "db1"),
    ),
    (
        "quarantined host left out",
        "",
        {"hosts": (host("web1"), host("web2")), "history": QUARANTINED},
        "restart",
        "restart",
        ("web2",),
    ),
    (
        "all hosts quarantined",
        "",
        {"hosts": (host("web1"),), "history": QUARANTINED},
        "skip",
        "quarantine",
        (),
    ),
    (
        "quarantine with hosts none",
        "defaults: {hosts: none}",
        {"hosts": (host("web1"), host("web2")), "history": QUARANTINED},
        "skip",
        "quarantine",
        (),
    ),
    (
        "per-host limit off",
        "limits: {per_host: null}",
        {"hosts": (host("web1"),), "history": QUARANTINED},
        "restart",
        "restart",
        ("web1",),
    ),
    (
        "below the per-host limit",
        "limits: {per_host: {failures: 6}}",
        {"hosts": (host("web1"),), "history": QUARANTINED},
        "restart",
        "restart",
        ("web1",),
    ),
    (
        "unchanged host is safe",
        "defaults: {require_unchanged: true}",
        {"hosts": (host(changed=0),)},
        "restart",
        "restart",
        ("web1",),
    ),
    (
        "changed host is unsafe",
        "defaults: {require_unchanged: true}",
        {"hosts": (host(changed=2),)},
        "skip",
        "unsafe_changed",
        (),
    ),
    (
        "unknown changed is unsafe",
        "defaults: {require_unchanged: true}",
        {"hosts": (host(changed=None),)},
        "skip",
        "unsafe_changed",
        (),
    ),
    (
        "unknown changed before Ansible ran is safe",
        "defaults: {require_unchanged: true}",
        {"hosts": (host(failure_class="init_failure", changed=None),)},
        "restart",
        "restart",
        ("web1",),
    ),
    (
        "only the unchanged hosts",
        "defaults: {require_unchanged: true}",
        {"hosts": (host("a", changed=1), host("b", changed=0), host("c", changed=None))},
        "restart",
        "restart",
        ("b",),
    ),
    (
        "changed hosts are fine without the gate",
        "",
        {"hosts": (host("a", changed=1), host("c", changed=None))},
        "restart",
        "restart",
        ("a", "c"),
    ),
    (
        "require_unchanged with hosts none",
        "defaults: {require_unchanged: true, hosts: none}",
        {"hosts": (host("a", changed=0), host("b", changed=3))},
        "skip",
        "unsafe_changed",
        (),
    ),
    (
        "rule turns the gate on",
        "rules: [{name: r, require_unchanged: true}]",
        {"hosts": (host(changed=1),)},
        "skip",
        "unsafe_changed",
        (),
    ),
    ("per-job budget left", "", {"usage": BudgetUsage(per_job=9)}, "restart", "restart", ("web1",)),
    ("per-job budget used", "", {"usage": BudgetUsage(per_job=10)}, "skip", "budget_per_job", ()),
    (
        "per-account budget used",
        "",
        {"usage": BudgetUsage(per_account=50)},
        "skip",
        "budget_per_account",
        (),
    ),
    ("global budget used", "", {"usage": BudgetUsage(global_=200)}, "skip", "budget_global", ()),
    (
        "budgets off",
        "limits: {per_job: null, per_account: null, global: null}",
        {"usage": BudgetUsage(10**6, 10**6, 10**6)},
        "restart",
        "restart",
        ("web1",),
    ),
    (
        "zero budget",
        "limits: {global: {restarts: 0}}",
        {},
        "skip",
        "budget_global",
        (),
    ),
    ("breaker open", "", {"restart_outcomes": OPEN_BREAKER}, "skip", "breaker_open", ()),
    ("systemic", INFRA_DOWN, SIX_OF_TEN, "skip", "systemic", ()),
    (
        "half failed is not over half",
        INFRA_DOWN,
        {**SIX_OF_TEN, "run_host_count": 12},
        "restart",
        "restart",
        tuple(f"web{n}" for n in range(6)),
    ),
    (
        "unknown run size does not match ratio_over",
        INFRA_DOWN,
        {**SIX_OF_TEN, "run_host_count": None},
        "restart",
        "restart",
        tuple(f"web{n}" for n in range(6)),
    ),
    (
        "a failed_hosts rule that restarts",
        "rules: [{name: few, when: {failed_hosts: {max: 1}}, max_restarts: 9}]",
        {"prior_restarts": 5},
        "restart",
        "restart",
        ("web1",),
    ),
    ("blackout past the deadline", BLACKOUT_NOW, {}, "skip", "blackout", ()),
    (
        "blackout ignored",
        BLACKOUT_NOW + "defaults: {ignore_blackouts: true}",
        {},
        "restart",
        "restart",
        ("web1",),
    ),
    (
        "blackout ignored by a rule",
        BLACKOUT_NOW + "rules: [{name: urgent, ignore_blackouts: true, when: {job: 'deploy*'}}]",
        {},
        "restart",
        "restart",
        ("web1",),
    ),
    ("signature open", PER_SIGNATURE, SIGNATURE_OPEN, "held", "signature_open", ("web1",)),
    (
        "signature breaker off",
        "",
        SIGNATURE_OPEN,
        "restart",
        "restart",
        ("web1",),
    ),
    (
        "signature breaker off with the fleet breaker",
        "circuit_breaker: null",
        SIGNATURE_OPEN,
        "restart",
        "restart",
        ("web1",),
    ),
    (
        "no signature",
        PER_SIGNATURE,
        {**SIGNATURE_OPEN, "signature": None},
        "restart",
        "restart",
        ("web1",),
    ),
    (
        "breaker off",
        "circuit_breaker: null",
        {"restart_outcomes": OPEN_BREAKER},
        "restart",
        "restart",
        ("web1",),
    ),
    # when several gates say no, the first in REASON_CODES order gives the reason
    (
        "not failed before paused",
        "",
        {"status": "SUCCESS", "paused": "paused"},
        "skip",
        "not_failed",
        (),
    ),
    (
        "paused before rule skip",
        "defaults: {action: skip}",
        {"paused": "paused"},
        "skip",
        "paused",
        (),
    ),
    (
        "rule skip before max_restarts",
        "defaults: {action: skip}",
        {"prior_restarts": 9},
        "skip",
        "rule_skip",
        (),
    ),
    (
        "max_restarts before deadline",
        "",
        {"prior_restarts": 9, "first_failure_at": NOW - timedelta(days=2)},
        "skip",
        "max_restarts",
        (),
    ),
    (
        "deadline before hosts",
        "",
        {"hosts": (), "first_failure_at": NOW - timedelta(days=2)},
        "skip",
        "deadline",
        (),
    ),
    (
        "quarantine before unsafe",
        "defaults: {require_unchanged: true}",
        {"hosts": (host("web1", changed=5),), "history": QUARANTINED},
        "skip",
        "quarantine",
        (),
    ),
    (
        "hosts before budgets",
        "",
        {"hosts": (), "usage": BudgetUsage(per_job=99)},
        "skip",
        "no_failed_hosts",
        (),
    ),
    (
        "per-job before per-account",
        "",
        {"usage": BudgetUsage(per_job=99, per_account=99, global_=999)},
        "skip",
        "budget_per_job",
        (),
    ),
    (
        "per-account before global",
        "",
        {"usage": BudgetUsage(per_account=99, global_=999)},
        "skip",
        "budget_per_account",
        (),
    ),
    (
        "budgets before breaker",
        "",
        {"usage": BudgetUsage(global_=999), "restart_outcomes": OPEN_BREAKER},
        "skip",
        "budget_global",
        (),
    ),
    ("paused before systemic", INFRA_DOWN, {**SIX_OF_TEN, "paused": "p"}, "skip", "paused", ()),
    (
        "systemic before max_restarts",
        INFRA_DOWN,
        {**SIX_OF_TEN, "prior_restarts": 9},
        "skip",
        "systemic",
        (),
    ),
    (
        "deadline before blackout",
        BLACKOUT_NOW,
        {"first_failure_at": NOW - timedelta(days=2)},
        "skip",
        "deadline",
        (),
    ),
    ("blackout before hosts", BLACKOUT_NOW, {"hosts": ()}, "skip", "blackout", ()),
    (
        "breaker before signature",
        PER_SIGNATURE,
        {**SIGNATURE_OPEN, "restart_outcomes": OPEN_BREAKER},
        "skip",
        "breaker_open",
        (),
    ),
    (
        "budgets before signature",
        PER_SIGNATURE,
        {**SIGNATURE_OPEN, "usage": BudgetUsage(per_job=10)},
        "skip",
        "budget_per_job",
        (),
    ),
    (
        "blackout before signature",
        PER_SIGNATURE + BLACKOUT_NOW,
        SIGNATURE_OPEN,
        "skip",
        "blackout",
        (),
    ),
    (
        "systemic before signature",
        PER_SIGNATURE + INFRA_DOWN,
        {**SIX_OF_TEN, **SIGNATURE_OPEN},
        "skip",
        "systemic",
        (),
    ),
]


@pytest.mark.parametrize(
    ("body", "fields", "action", "code", "hosts"),
    [g[1:] for g in GATES],
    ids=[g[0] for g in GATES],
)
def test_decision_table(
    body: str, fields: dict[str, Any], action: str, code: str, hosts: tuple[str, ...]
) -> None:
    decision = decide_restart(policy(body), make_input(**fields))
    assert (decision.action, decision.reason_code, decision.hosts) == (action, code, hosts)
    assert decision.reason_code in REASON_CODES
    assert decision.signature == fields.get("signature")
    assert decision.deferred_by is None
    if action in ("restart", "held"):
        assert decision.due_at is not None and decision.backoff_seconds is not None
        assert decision.due_at == NOW + timedelta(seconds=decision.backoff_seconds)
        assert decision.queued
    else:
        assert decision.due_at is None and decision.backoff_seconds is None
        assert decision.reason.startswith("skip")
        assert not decision.queued
    assert decision.held is (action == "held")
    assert (decision.held_until is not None) is (action == "held")


def test_reason_codes_are_all_covered_by_the_table() -> None:
    assert {g[4] for g in GATES} == set(REASON_CODES)


def test_excluded_hosts_say_why() -> None:
    body = "rules: [{name: flaky, require_unchanged: true, when: {host: 'web*'}}]"
    hosts = (
        host("web1", changed=0),
        host("web2", changed=0),
        host("web3", changed=4),
        host("db1", changed=0),
    )
    history = {"web2": QUARANTINED["web1"]}
    decision = decide_restart(policy(body), make_input(hosts=hosts, history=history))
    assert decision.hosts == ("web1",)
    assert decision.excluded_hosts == (
        ExcludedHost("db1", "not_matched", "not matched by rule flaky"),
        ExcludedHost("web2", "quarantine", "quarantined until 20:00:00 UTC (5 failures within 1d)"),
        ExcludedHost(
            "web3", "unsafe_changed", "changed 4 tasks before failing (require_unchanged)"
        ),
    )
    assert decision.reason.startswith("restart 1 of 4 hosts at ")


# --- the human sentence -----------------------------------------------------------------------

SENTENCES: list[tuple[str, str, dict[str, Any], str]] = [
    (
        "restart by rule",
        "defaults: {backoff: {jitter: 0}}\n"
        "rules: [{name: flaky-network, max_restarts: 5, backoff: {initial: 30s}, "
        "when: {failure: [unreachable]}}]",
        {
            "hosts": (WEB_TIMEOUT, host("web2", "unreachable"), DB_FAILED),
            "prior_restarts": 1,
            "now": datetime(2024, 5, 1, 14, 4, 30, tzinfo=UTC),
        },
        "restart 2 of 3 hosts at 14:05:30 UTC by rule flaky-network (attempt 2 of 5, backoff 60 s)",
    ),
    (
        "restart by the defaults",
        NO_JITTER,
        {},
        "restart 1 of 1 host at 14:00:30 UTC by the defaults (attempt 1 of 3, backoff 30 s)",
    ),
    (
        "restart without host list",
        NO_JITTER + "  hosts: none\n",
        {},
        "restart all hosts (no host list) at 14:00:30 UTC by the defaults "
        "(attempt 1 of 3, backoff 30 s)",
    ),
    (
        "restart init failure",
        NO_JITTER,
        {"hosts": (), "status": "INIT_FAILURE"},
        "restart with no host list at 14:00:30 UTC by the defaults (attempt 1 of 3, backoff 30 s)",
    ),
    (
        "restart tomorrow",
        "defaults: {backoff: {jitter: 0, initial: 1h, max: 1h}}",
        {"now": datetime(2024, 5, 1, 23, 30, tzinfo=UTC)},
        "restart 1 of 1 host at 2024-05-02 00:30:00 UTC by the defaults "
        "(attempt 1 of 3, backoff 60 min)",
    ),
    ("max_restarts", "", {"prior_restarts": 3}, "skip: max_restarts 3 reached (the defaults)"),
    (
        "max_restarts by rule",
        "rules: [{name: r, max_restarts: 1}]",
        {"prior_restarts": 1},
        "skip: max_restarts 1 reached (rule r)",
    ),
    ("rule skip", one_rule("{}"), {}, "skip by rule r"),
    ("not failed", "", {"status": "SUCCESS"}, "skip: status SUCCESS is not a failure"),
    ("paused", "", {"paused": "job paused by alice"}, "skip: job paused by alice"),
    ("paused blank", "", {"paused": " "}, "skip: automatic restarts are paused"),
    (
        "one host unsafe",
        "defaults: {require_unchanged: true}",
        {"hosts": (host("a", changed=None),)},
        "skip: host a: changed count unknown (require_unchanged)",
    ),
    (
        "quarantine with hosts none",
        "defaults: {hosts: none}",
        {"hosts": (host("web1"), host("web2")), "history": QUARANTINED},
        "skip: host web1: quarantined until 20:00:00 UTC (5 failures within 1d), and hosts: none "
        "cannot leave hosts out",
    ),
    (
        "several hosts quarantined",
        "",
        {
            "hosts": (host("web1"), host("web2")),
            "history": {**QUARANTINED, "web2": QUARANTINED["web1"]},
        },
        "skip: 2 hosts are quarantined: web1, web2",
    ),
    (
        "deadline passed",
        "",
        {"first_failure_at": NOW - timedelta(hours=7)},
        "skip: deadline 6h after the first failure passed at 13:00:00 UTC",
    ),
    (
        "deadline during backoff",
        NO_JITTER,
        {"first_failure_at": NOW - timedelta(hours=6) + 10 * S},
        "skip: the restart would be due at 14:00:30 UTC, after the deadline 6h after the first "
        "failure (14:00:10 UTC)",
    ),
    (
        "no failed hosts",
        "",
        {"hosts": ()},
        "skip: no failed hosts are known to restart (hosts: failed)",
    ),
    (
        "one host quarantined",
        "",
        {"history": QUARANTINED},
        "skip: host web1: quarantined until 20:00:00 UTC (5 failures within 1d)",
    ),
    (
        "unsafe",
        "defaults: {require_unchanged: true}",
        {"hosts": (host("a", changed=1), host("b", changed=None))},
        "skip: 2 hosts are unsafe to restart under require_unchanged: a, b",
    ),
    (
        "per-job budget",
        "",
        {"usage": BudgetUsage(per_job=10)},
        "skip: per-job budget of 10 restarts per 1h is used up",
    ),
    (
        "global budget of one",
        "limits: {global: {restarts: 1, window: 30m}}",
        {"usage": BudgetUsage(global_=1)},
        "skip: global budget of 1 restart per 30m is used up",
    ),
    (
        "breaker",
        "",
        {"restart_outcomes": OPEN_BREAKER},
        "skip: circuit breaker open until 14:10:00 UTC (10 of 10 restarts within 15m failed again)",
    ),
    (
        "systemic",
        INFRA_DOWN,
        SIX_OF_TEN,
        "skip: systemic failure, 6 of 10 hosts failed (rule infra-down)",
    ),
    (
        "systemic by count, run size unknown",
        "rules: [{name: many, when: {failed_hosts: {min: 5}}, action: skip}]",
        {**SIX_OF_TEN, "run_host_count": None},
        "skip: systemic failure, 6 hosts failed (rule many)",
    ),
    (
        "systemic counts the failed hosts into a smaller run size",
        "rules: [{name: many, when: {failed_hosts: {min: 5}}, action: skip}]",
        {**SIX_OF_TEN, "run_host_count": 4},
        "skip: systemic failure, 6 of 6 hosts failed (rule many)",
    ),
    (
        "blackout past the deadline",
        BLACKOUT_NOW,
        {},
        "skip: blackout maintenance lasts until 21:00:00 UTC, past the deadline 6h after the "
        "first failure (20:00:00 UTC)",
    ),
    (
        "deferred by a blackout",
        NO_JITTER + "  deadline: 12h\n" + BLACKOUT_NOW,
        {},
        "restart 1 of 1 host deferred until 21:00:00 UTC (blackout maintenance) by the defaults "
        "(attempt 1 of 3, backoff 30 s)",
    ),
    (
        "held",
        PER_SIGNATURE,
        SIGNATURE_OPEN,
        "held: signature 'task_failed: fatal: unable to access <path>: Failed to connect to "
        "<host> port <n>' open until 14:15:00 UTC (5 executions of 3 jobs within 10m)",
    ),
]


@pytest.mark.parametrize(
    ("body", "fields", "sentence"), [s[1:] for s in SENTENCES], ids=[s[0] for s in SENTENCES]
)
def test_reason_sentence(body: str, fields: dict[str, Any], sentence: str) -> None:
    assert decide_restart(policy(body), make_input(**fields)).reason == sentence


def test_decision_records_rule_version_and_attempt() -> None:
    parsed = policy("rules: [{name: r, when: {account: ACME}}]")
    decision = decide_restart(parsed, make_input(prior_restarts=2))
    assert decision.rule == "r"
    assert decision.policy_version == parsed.version_hash
    assert decision.attempt == 3
    assert decision.restart


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        make_input(now=datetime(2024, 5, 1, 14, 0))


def test_negative_prior_restarts_are_refused() -> None:
    with pytest.raises(ValueError, match="prior_restarts"):
        make_input(prior_restarts=-1)


def test_times_in_other_zones_are_reported_in_utc() -> None:
    plus_two = timezone_offset(2)
    decision = decide_restart(policy(NO_JITTER), make_input(now=NOW.astimezone(plus_two)))
    assert decision.due_at == NOW + 30 * S
    assert decision.due_at is not None and decision.due_at.tzinfo == UTC
    assert " at 14:00:30 UTC " in decision.reason


def timezone_offset(hours: int) -> Any:
    from datetime import timezone

    return timezone(timedelta(hours=hours))


# --- backoff ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("backoff", "delays"),
    [
        (Backoff(jitter=0), [30, 60, 120, 240, 480, 600, 600, 600]),
        (Backoff(initial=0 * S, jitter=0), [0, 0, 0, 0]),
        (Backoff(initial=10 * S, factor=1, jitter=0), [10, 10, 10]),
        (Backoff(initial=10 * S, factor=3, max=100 * S, jitter=0), [10, 30, 90, 100, 100]),
        (Backoff(initial=60 * S, max=60 * S, jitter=0), [60, 60]),
        (Backoff(initial=1 * S, factor=1.5, max=3600 * S, jitter=0), [1, 2, 2, 3, 5]),
    ],
)
def test_backoff_without_jitter(backoff: Backoff, delays: list[float]) -> None:
    got = [backoff_delay(backoff, "e", n) for n in range(len(delays))]
    assert got == delays


def test_backoff_jitter_is_deterministic_and_bounded() -> None:
    backoff = Backoff(initial=100 * S, factor=1, max=1000 * S, jitter=0.2)
    first = [backoff_delay(backoff, f"exec-{i}", 0) for i in range(200)]
    again = [backoff_delay(backoff, f"exec-{i}", 0) for i in range(200)]
    assert first == again
    assert all(80 <= d <= 120 for d in first)
    assert len(set(first)) > 10  # it does spread restarts out
    assert min(first) < 95 and max(first) > 105


def test_backoff_jitter_never_passes_max() -> None:
    backoff = Backoff(initial=600 * S, factor=2, max=600 * S, jitter=1.0)
    assert all(0 <= backoff_delay(backoff, f"e{i}", 3) <= 600 for i in range(100))


def test_huge_prior_restarts_do_not_overflow() -> None:
    backoff = Backoff(initial=30 * S, factor=1000, max=3600 * S, jitter=0.5)
    assert backoff_delay(backoff, "e", 10**6) <= 3600


# --- quarantine -------------------------------------------------------------------------------

LIMIT = HostLimit(failures=3, window=timedelta(hours=1), quarantine=timedelta(hours=2))


@pytest.mark.parametrize(
    ("ago_minutes", "until_minutes"),
    [
        ([], None),
        ([0], None),
        ([0, 10], None),
        ([0, 10, 20], 120),  # the 3rd failure within 1h: quarantined 2h from the latest
        ([20, 10, 0], 120),  # any order
        ([0, 30, 59], 120),
        ([0, 30, 60], None),  # the window is (t - 1h, t]: 60 minutes apart is outside
        ([119, 110, 100], 20),  # the 3rd failure was 100 minutes ago: 20 minutes left
        ([120, 130, 140], None),  # quarantine over
        ([0, 10, 20, 30], 120),
        ([-5, 0, 10], None),  # a failure in the future is ignored
        ([0, 50, 100, 150, 200], None),  # never 3 within an hour
    ],
)
def test_quarantined_until(ago_minutes: list[int], until_minutes: int | None) -> None:
    times = [NOW - minutes(m) for m in ago_minutes]
    until = quarantined_until(LIMIT, times, NOW)
    if until_minutes is None:
        assert until is None
    else:
        assert until == NOW + minutes(until_minutes)


# --- circuit breaker --------------------------------------------------------------------------

BREAKER = CircuitBreaker(
    failure_ratio=0.5, min_restarts=4, window=timedelta(minutes=15), cool_down=minutes(10)
)


def outcomes(*spec: tuple[float, bool]) -> tuple[RestartOutcome, ...]:
    """(minutes ago, failed again) pairs."""
    return tuple(RestartOutcome(NOW - minutes(ago), failed) for ago, failed in spec)


@pytest.mark.parametrize(
    ("spec", "is_open", "until_minutes", "counts"),
    [
        ((), False, None, (0, 0)),
        (((1, True), (2, True), (3, True)), False, None, (3, 3)),  # fewer than min_restarts
        (((1, True), (2, True), (3, False), (4, False)), True, 10, (2, 4)),  # ratio 0.5
        (((1, True), (2, False), (3, False), (4, False)), False, None, (1, 4)),  # 0.25
        (((1, True), (2, True), (3, True), (20, True)), False, None, (3, 3)),  # one too old
        # held until the oldest failure left the window 8 minutes ago: open 2 more minutes
        (((20, True), (21, True), (22, True), (23, True)), True, 2, (4, 4)),
        # ... and closed once the cool-down is over
        (((30, True), (31, True), (32, True), (33, True)), False, None, (0, 0)),
        # a success leaving the window can trip it: at -10 the window is (2 fail, 2 ok) = 0.5
        (
            ((5, True), (6, True), (7, False), (8, False), (24, False)),
            True,
            10,
            (2, 4),
        ),
        (((-1, True), (-2, True), (-3, True), (-4, True)), False, None, (0, 0)),  # future
    ],
)
def test_breaker_state(
    spec: tuple[tuple[float, bool], ...],
    is_open: bool,
    until_minutes: float | None,
    counts: tuple[int, int],
) -> None:
    state = breaker_state(BREAKER, outcomes(*spec), NOW)
    assert state.open is is_open
    assert state.until == (None if until_minutes is None else NOW + minutes(until_minutes))
    assert (state.failed, state.total) == counts


def test_breaker_open_while_within_cool_down_after_condition_stopped() -> None:
    # four failures 10..13 minutes ago; the window (15m) lets the oldest go 2 minutes from now
    spec = outcomes((10, True), (11, True), (12, True), (13, True))
    assert breaker_state(BREAKER, spec, NOW).until == NOW + minutes(10)
    later = NOW + minutes(5)
    state = breaker_state(BREAKER, spec, later)
    assert state.open and state.until == NOW + minutes(2) + minutes(10)
    assert not breaker_state(BREAKER, spec, NOW + minutes(12)).open


# --- explanations -----------------------------------------------------------------------------

EXPLAINED = """\
rules:
  - name: no-db-migrations
    when: {job: 'db-migrate*'}
    action: skip
  - name: prod-only
    when: {account: PROD, status: [INIT_FAILURE]}
  - name: flaky-network
    when: {failure: [unreachable], message: '(?i)timed out'}
    max_restarts: 5
  - name: everything
"""


def test_explain_gives_each_rule_and_why() -> None:
    inp = make_input(hosts=(WEB_TIMEOUT, DB_FAILED))
    explanation = explain_decision(policy(EXPLAINED), inp)
    assert explanation.decision == decide_restart(policy(EXPLAINED), inp)
    assert explanation.decision.rule == "flaky-network"
    traces = {t.rule: t for t in explanation.traces}
    assert [t.rule for t in explanation.traces] == [
        "no-db-migrations",
        "prod-only",
        "flaky-network",
        "everything",
    ]
    assert traces["no-db-migrations"].matched is False
    assert traces["no-db-migrations"].reasons == (
        "job '1111505e-0000-4000-8000-000000000001' (description 'deploy web') does not match "
        "'db-migrate*'",
    )
    assert traces["prod-only"].reasons == (
        "status FAILURE is not in [INIT_FAILURE]",
        "account 'ACME' does not match 'PROD'",
    )
    assert traces["flaky-network"].matched is True
    assert traces["flaky-network"].reasons == (
        "1 of 2 failed hosts match the host conditions: web1",
    )
    assert traces["everything"].matched is True
    assert traces["everything"].reasons == (
        "no conditions: matches every failure",
        "not used: rule flaky-network matched first",
    )
    # the action gate is rule_skip, or systemic when a failed_hosts rule says skip
    assert [c.code for c in explanation.checks] == [
        code for code in REASON_CODES[1:] if code != ReasonCode.SYSTEMIC
    ]
    assert all(c.passed for c in explanation.checks)


def test_explain_lists_host_mismatches() -> None:
    inp = make_input(hosts=(DB_FAILED, host("web9", "unreachable", "refused")))
    trace = explain_decision(policy(EXPLAINED), inp).traces[2]
    assert trace.reasons == (
        "no failed host matches: db1: failure task_failed is not in [unreachable]; "
        "web9: message 'refused' does not match '(?i)timed out'",
    )


def test_explain_shows_every_failing_check() -> None:
    inp = make_input(
        prior_restarts=3,
        usage=BudgetUsage(per_job=10, global_=500),
        restart_outcomes=OPEN_BREAKER,
        history=QUARANTINED,
    )
    explanation = explain_decision(policy(), inp)
    assert explanation.decision.reason_code == "max_restarts"
    failing = [c.code for c in explanation.checks if not c.passed]
    assert failing == [
        "max_restarts",
        "quarantine",
        "budget_per_job",
        "budget_global",
        "breaker_open",
    ]


def test_format_explanation_is_readable() -> None:
    inp = make_input(hosts=(WEB_TIMEOUT, DB_FAILED))
    text = format_explanation(explain_decision(policy(EXPLAINED), inp))
    assert "decision: restart (restart)" in text
    assert "rule:     flaky-network" in text
    assert "left out: db1: not matched by rule flaky-network [not_matched]" in text
    assert "  no match no-db-migrations" in text
    assert "  ok   breaker_open: circuit breaker closed" in text


def test_explain_without_rules() -> None:
    explanation = explain_decision(policy(), make_input())
    assert explanation.traces == ()
    assert "(none: the defaults decide)" in format_explanation(explanation)


def test_same_input_same_decision() -> None:
    inp: DecisionInput = make_input(hosts=(WEB_TIMEOUT, DB_FAILED), prior_restarts=1)
    parsed = policy(EXPLAINED)
    assert decide_restart(parsed, inp) == decide_restart(parsed, inp)
    assert decide_restart(parsed, inp) == decide_restart(
        policy(EXPLAINED), make_input(hosts=(WEB_TIMEOUT, DB_FAILED), prior_restarts=1)
    )


# --- round two: systemic failures, blackouts, the error-signature breaker ------------------------


def test_explain_shows_the_failed_share() -> None:
    body = (
        "rules:\n"
        "  - name: infra-down\n"
        "    when: {failed_hosts: {min: 3, ratio_over: 0.5}}\n"
        "    action: skip\n"
        "  - name: few\n"
        "    when: {failed_hosts: {max: 2}}\n"
    )
    explanation = explain_decision(policy(body), make_input(**SIX_OF_TEN))
    assert explanation.traces[0].reasons == (
        "6 failed hosts is at least min 3",
        "6 of 10 hosts failed (60%) is over 50%",
    )
    assert explanation.traces[1].reasons == ("6 failed hosts is more than max 2",)
    assert explanation.decision.reason_code == "systemic"
    action = explanation.checks[2]
    assert (action.code, action.passed) == ("systemic", False)
    assert action.detail == "rule infra-down says skip: 6 of 10 hosts failed (systemic)"

    unknown = explain_decision(policy(body), make_input(**{**SIX_OF_TEN, "run_host_count": None}))
    assert unknown.traces[0].matched is False
    assert unknown.traces[0].reasons == (
        "6 failed hosts is at least min 3",
        "the run's host count is unknown: ratio_over cannot hold",
    )
    assert unknown.decision.rule == "defaults"
    assert unknown.checks[2].code == "rule_skip"

    half = explain_decision(policy(body), make_input(**{**SIX_OF_TEN, "run_host_count": 12}))
    assert half.traces[0].reasons[1] == "6 of 12 hosts failed (50%) is not over 50%"


def test_ratio_over_is_strictly_over() -> None:
    body = "rules: [{name: all, when: {failed_hosts: {ratio_over: 0}}, action: skip}]"
    hosts = {"hosts": (host("a"),)}
    assert decide_restart(policy(body), make_input(**hosts, run_host_count=3)).rule == "all"
    nothing_failed = make_input(hosts=(), status="INIT_FAILURE", run_host_count=3)
    assert decide_restart(policy(body), nothing_failed).rule == "defaults"
    empty_run = make_input(hosts=(), status="INIT_FAILURE", run_host_count=0)
    assert decide_restart(policy(body), empty_run).rule == "defaults"


def test_a_failed_hosts_rule_is_not_a_catch_all() -> None:
    parsed = policy(INFRA_DOWN + "  - name: later\n")
    assert parsed.warnings == ()


def test_explain_shows_the_blackout_and_the_held_restart() -> None:
    body = NO_JITTER + "  deadline: 12h\n" + BLACKOUT_NOW + PER_SIGNATURE
    explanation = explain_decision(policy(body), make_input(**SIGNATURE_OPEN))
    decision = explanation.decision
    assert (decision.action, decision.reason_code) == ("held", "signature_open")
    assert decision.due_at == datetime(2024, 5, 1, 21, 0, tzinfo=UTC)
    assert decision.deferred_by == "maintenance"
    assert decision.held_until == NOW + minutes(15)
    assert decision.signature == GIT_DOWN
    checks = {c.code: c for c in explanation.checks}
    assert [c.code for c in explanation.checks][-2:] == ["breaker_open", "signature_open"]
    assert [c.code for c in explanation.checks][4:6] == ["deadline", "blackout"]
    assert checks["blackout"].passed
    assert checks["blackout"].detail == (
        "due at 14:00:30 UTC, inside blackout maintenance until 21:00:00 UTC (21:00 UTC): "
        "deferred, within the deadline 12h after the first failure (2024-05-02 02:00:00 UTC)"
    )
    assert not checks["signature_open"].passed
    assert checks["signature_open"].detail == (
        "signature 'task_failed: fatal: unable to access <path>: Failed to connect to <host> "
        "port <n>' open until 14:15:00 UTC: 5 executions of 3 jobs within 10m"
    )
    text = format_explanation(explanation)
    assert "decision: held (signature_open)" in text
    assert "deferred: until 2024-05-01 21:00:00 UTC by blackout maintenance" in text
    assert "held:     until 2024-05-01 14:15:00 UTC at least" in text
    assert GIT_DOWN is not None
    assert "signature: 'task_failed: fatal: unable to access <path>: " in text
    assert text.count(f"[{GIT_DOWN.key}]") == 1
    assert "  HOLD signature_open: signature 'task_failed: " in text
    assert "  ok   blackout: due at 14:00:30 UTC, inside blackout maintenance" in text


def test_explain_checks_when_the_new_gates_are_off() -> None:
    checks = {c.code: c for c in explain_decision(policy(), make_input()).checks}
    assert checks["blackout"].detail == "no blackout windows"
    assert checks["signature_open"].detail == "error-signature breaker is off"
    body = BLACKOUT_NOW + PER_SIGNATURE + "defaults: {ignore_blackouts: true}"
    checks = {c.code: c for c in explain_decision(policy(body), make_input()).checks}
    assert checks["blackout"].detail == "the defaults ignores blackouts"
    assert checks["signature_open"].detail == "the failure has no signature"
    closed = {**SIGNATURE_OPEN, "signature_sightings": SIGNATURE_OPEN["signature_sightings"][:2]}
    checks = {c.code: c for c in explain_decision(policy(body), make_input(**closed)).checks}
    assert checks["signature_open"].passed
    assert checks["signature_open"].detail.endswith(
        "closed: 2 executions of 2 jobs within 10m (opens at 5 executions of 3 jobs)"
    )


def test_explain_shows_the_blackout_skip() -> None:
    explanation = explain_decision(policy(NO_JITTER + BLACKOUT_NOW), make_input())
    check = next(c for c in explanation.checks if c.code == "blackout")
    assert not check.passed
    assert check.detail == (
        "due at 14:00:30 UTC, inside blackout maintenance until 21:00:00 UTC (21:00 UTC), after "
        "the deadline 6h after the first failure (20:00:00 UTC)"
    )
    assert "  FAIL blackout: due at " in format_explanation(explanation)


def test_every_decision_carries_the_signature() -> None:
    for fields in ({"status": "SUCCESS"}, {"prior_restarts": 9}, {}):
        decision = decide_restart(policy(PER_SIGNATURE), make_input(signature=GIT_DOWN, **fields))
        assert decision.signature == GIT_DOWN


def test_format_explanation_says_where_the_decision_was_made() -> None:
    # A skip rule decides at rule_skip: max_restarts, the deadline and the rest are shown
    # below a line that says they did not decide.
    body = "rules:\n  - name: no-db\n    when: {job: 'job-*'}\n    action: skip\n"
    inp = make_input(job_id="job-1")

    lines = format_explanation(explain_decision(policy(body), inp)).splitlines()

    start = lines.index("checks:")
    deciding = lines.index("  FAIL rule_skip: rule no-db says skip")
    assert deciding > start
    assert lines[deciding + 1] == "  ---- rule_skip decides; the checks below are for information"
    assert lines[deciding + 2].startswith("  ok   max_restarts: ")
    assert sum(line.startswith("  ----") for line in lines) == 1


def test_format_explanation_of_a_restart_has_no_deciding_line() -> None:
    text = format_explanation(explain_decision(policy(EXPLAINED), make_input()))

    assert "  ----" not in text
