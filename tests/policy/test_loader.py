from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import time, timedelta
from pathlib import Path
from textwrap import dedent, indent
from typing import Any

import pytest

from app.policy import (
    DEFAULT_POLICY_TEXT,
    Backoff,
    Budget,
    CircuitBreaker,
    FailedShare,
    HostFailure,
    HostLimit,
    Limits,
    Policy,
    PolicyError,
    PolicyProblem,
    Schedule,
    Settings,
    SignatureBreaker,
    decide_restart,
    parse_policy,
    policy_version,
)

from .helpers import make_input, policy

REPO = Path(__file__).resolve().parents[2]


def problems_of(text: str, source: str = "policy.yaml") -> list[tuple[int, str]]:
    with pytest.raises(PolicyError) as caught:
        parse_policy(dedent(text), source)
    return [(p.line, p.message) for p in caught.value.problems]


# --- valid policies ---------------------------------------------------------------------------

S = timedelta(seconds=1)


@pytest.mark.parametrize(
    ("body", "read", "expected"),
    [
        # defaults
        ("", lambda p: p.defaults, Settings()),
        ("defaults:\n", lambda p: p.defaults, Settings()),
        ("defaults: {}", lambda p: p.defaults, Settings()),
        ("defaults: {action: skip}", lambda p: p.defaults.action, "skip"),
        ("defaults: {action: restart}", lambda p: p.defaults.action, "restart"),
        ("defaults: {hosts: none}", lambda p: p.defaults.hosts, "none"),
        ("defaults: {hosts: all_failed}", lambda p: p.defaults.hosts, "all_failed"),
        ("defaults: {hosts: failed}", lambda p: p.defaults.hosts, "failed"),
        ("defaults: {max_restarts: 0}", lambda p: p.defaults.max_restarts, 0),
        ("defaults: {max_restarts: 1000}", lambda p: p.defaults.max_restarts, 1000),
        ("defaults: {deadline: null}", lambda p: p.defaults.deadline, None),
        ("defaults: {deadline: 1h30m}", lambda p: p.defaults.deadline, 5400 * S),
        ("defaults: {deadline: 90}", lambda p: p.defaults.deadline, 90 * S),
        ("defaults: {require_unchanged: true}", lambda p: p.defaults.require_unchanged, True),
        ("defaults: {require_unchanged: no}", lambda p: p.defaults.require_unchanged, False),
        ("defaults: {backoff: {}}", lambda p: p.defaults.backoff, Backoff()),
        (
            "defaults: {backoff: {initial: 0s}}",
            lambda p: p.defaults.backoff,
            Backoff(initial=0 * S),
        ),
        ("defaults: {backoff: {factor: 1}}", lambda p: p.defaults.backoff.factor, 1.0),
        ("defaults: {backoff: {factor: 1.5}}", lambda p: p.defaults.backoff.factor, 1.5),
        ("defaults: {backoff: {max: 1h}}", lambda p: p.defaults.backoff.max, 3600 * S),
        ("defaults: {backoff: {jitter: 0}}", lambda p: p.defaults.backoff.jitter, 0.0),
        ("defaults: {backoff: {jitter: 1}}", lambda p: p.defaults.backoff.jitter, 1.0),
        (
            "defaults: {backoff: {initial: 10m, max: 10m}}",
            lambda p: p.defaults.backoff,
            Backoff(initial=600 * S, max=600 * S),
        ),
        # rules inherit the defaults and override what they name
        (
            "defaults: {max_restarts: 7}\nrules: [{name: a}]",
            lambda p: p.rules[0].settings.max_restarts,
            7,
        ),
        (
            "defaults: {backoff: {initial: 1m}}\nrules: [{name: a, backoff: {max: 1h}}]",
            lambda p: p.rules[0].settings.backoff,
            Backoff(initial=60 * S, max=3600 * S),
        ),
        ("rules: [{name: a, action: skip}]", lambda p: p.rules[0].settings.action, "skip"),
        ("rules: [{name: a, hosts: none}]", lambda p: p.rules[0].settings.hosts, "none"),
        ("rules: [{name: a, max_restarts: 9}]", lambda p: p.rules[0].settings.max_restarts, 9),
        ("rules: [{name: a, deadline: 2d}]", lambda p: p.rules[0].settings.deadline, 172800 * S),
        ("rules: [{name: a, deadline: null}]", lambda p: p.rules[0].settings.deadline, None),
        (
            "rules: [{name: a, require_unchanged: true}]",
            lambda p: p.rules[0].settings.require_unchanged,
            True,
        ),
        ("rules: [{name: a, description: Why}]", lambda p: p.rules[0].description, "Why"),
        ("rules: [{name: a}, {name: b}]", lambda p: [r.name for r in p.rules], ["a", "b"]),
        ("rules: [{name: a}]", lambda p: p.rules[0].line, 2),
        ("rules:\n", lambda p: p.rules, ()),
        ("rules: []", lambda p: p.rules, ()),
        # when
        ("rules: [{name: a}]", lambda p: p.rules[0].when.is_catch_all, True),
        ("rules: [{name: a, when: }]", lambda p: p.rules[0].when.is_catch_all, True),
        ("rules: [{name: a, when: {}}]", lambda p: p.rules[0].when.is_catch_all, True),
        (
            "rules: [{name: a, when: {account: 'AC*'}}]",
            lambda p: [g.pattern for g in p.rules[0].when.account],
            ["AC*"],
        ),
        (
            "rules: [{name: a, when: {job: ['db-*', x]}}]",
            lambda p: [g.pattern for g in p.rules[0].when.job],
            ["db-*", "x"],
        ),
        (
            "rules: [{name: a, when: {host: 'web*'}}]",
            lambda p: [g.pattern for g in p.rules[0].when.host],
            ["web*"],
        ),
        (
            "rules: [{name: a, when: {failure: [Unreachable, task_failed, unreachable]}}]",
            lambda p: p.rules[0].when.failure,
            ("unreachable", "task_failed"),
        ),
        (
            "rules: [{name: a, when: {failure: init_failure}}]",
            lambda p: p.rules[0].when.failure,
            ("init_failure",),
        ),
        (
            "rules: [{name: a, when: {status: [failure, Init_Failure]}}]",
            lambda p: p.rules[0].when.status,
            ("FAILURE", "INIT_FAILURE"),
        ),
        (
            "rules: [{name: a, when: {message: '(?i)timed out'}}]",
            lambda p: [m.pattern for m in p.rules[0].when.message],
            ["(?i)timed out"],
        ),
        (
            "rules: [{name: a, when: {host: 'h*'}}]",
            lambda p: p.rules[0].when.has_host_conditions,
            True,
        ),
        (
            "rules: [{name: a, when: {job: 'j*'}}]",
            lambda p: p.rules[0].when.has_host_conditions,
            False,
        ),
        # limits
        ("", lambda p: p.limits, Limits()),
        ("limits: {}", lambda p: p.limits, Limits()),
        ("limits: {per_job: null}", lambda p: p.limits.per_job, None),
        ("limits: {per_account: null}", lambda p: p.limits.per_account, None),
        ("limits: {global: null}", lambda p: p.limits.global_, None),
        ("limits: {per_host: null}", lambda p: p.limits.per_host, None),
        (
            "limits: {per_job: {restarts: 3}}",
            lambda p: p.limits.per_job,
            Budget(restarts=3, window=3600 * S),
        ),
        (
            "limits: {per_account: {window: 2h}}",
            lambda p: p.limits.per_account,
            Budget(restarts=50, window=7200 * S),
        ),
        (
            "limits: {global: {restarts: 0, window: 30m}}",
            lambda p: p.limits.global_,
            Budget(restarts=0, window=1800 * S),
        ),
        (
            "limits: {per_host: {failures: 2}}",
            lambda p: p.limits.per_host,
            HostLimit(failures=2),
        ),
        (
            "limits: {per_host: {window: 1h, quarantine: 30m}}",
            lambda p: p.limits.per_host,
            HostLimit(window=3600 * S, quarantine=1800 * S),
        ),
        ("limits: {count_manual: true}", lambda p: p.limits.count_manual, True),
        # circuit breaker
        ("", lambda p: p.circuit_breaker, CircuitBreaker()),
        ("circuit_breaker: null", lambda p: p.circuit_breaker, None),
        ("circuit_breaker: {}", lambda p: p.circuit_breaker, CircuitBreaker()),
        (
            "circuit_breaker: {failure_ratio: 1}",
            lambda p: p.circuit_breaker,
            CircuitBreaker(failure_ratio=1.0),
        ),
        (
            "circuit_breaker: {min_restarts: 1, window: 1h, cool_down: 0s}",
            lambda p: p.circuit_breaker,
            CircuitBreaker(min_restarts=1, window=3600 * S, cool_down=0 * S),
        ),
        # the error-signature breaker: off unless given
        ("", lambda p: p.signature_breaker, None),
        ("circuit_breaker: {}", lambda p: p.signature_breaker, None),
        ("circuit_breaker: {per_signature: null}", lambda p: p.signature_breaker, None),
        ("circuit_breaker: null", lambda p: p.signature_breaker, None),
        ("circuit_breaker: {per_signature: {}}", lambda p: p.signature_breaker, SignatureBreaker()),
        (
            "circuit_breaker: {per_signature: {}}",
            lambda p: p.circuit_breaker,
            CircuitBreaker(),
        ),
        (
            "circuit_breaker:\n"
            "  per_signature: {executions: 2, jobs: 1, window: 5m, cool_down: 0s}",
            lambda p: p.signature_breaker,
            SignatureBreaker(executions=2, jobs=1, window=300 * S, cool_down=0 * S),
        ),
        # failed_hosts
        (
            "rules: [{name: a, when: {failed_hosts: {ratio_over: 0.5}}}]",
            lambda p: p.rules[0].when.failed_hosts,
            FailedShare(ratio_over=0.5),
        ),
        (
            "rules: [{name: a, when: {failed_hosts: {min: 0, max: 0}}}]",
            lambda p: p.rules[0].when.failed_hosts,
            FailedShare(min=0, max=0),
        ),
        (
            "rules: [{name: a, when: {failed_hosts: {min: 3, max: 9, ratio_over: 0}}}]",
            lambda p: p.rules[0].when.failed_hosts,
            FailedShare(min=3, max=9, ratio_over=0.0),
        ),
        (
            "rules: [{name: a, when: {failed_hosts: {min: 3}}}]",
            lambda p: p.rules[0].when.is_catch_all,
            False,
        ),
        ("rules: [{name: a}]", lambda p: p.rules[0].when.failed_hosts, None),
        # ignore_blackouts
        ("", lambda p: p.defaults.ignore_blackouts, False),
        ("defaults: {ignore_blackouts: true}", lambda p: p.defaults.ignore_blackouts, True),
        (
            "defaults: {ignore_blackouts: true}\nrules: [{name: a}]",
            lambda p: p.rules[0].settings.ignore_blackouts,
            True,
        ),
        (
            "rules: [{name: a, ignore_blackouts: true}]",
            lambda p: p.rules[0].settings.ignore_blackouts,
            True,
        ),
        # schedule
        ("", lambda p: p.schedule, Schedule()),
        ("schedule: null", lambda p: p.schedule, Schedule()),
        ("schedule: {}", lambda p: p.schedule, Schedule()),
        ("schedule: {blackouts: []}", lambda p: p.schedule, Schedule()),
        ("schedule: {blackouts: null}", lambda p: p.schedule, Schedule()),
    ],
)
def test_valid_policy_values(body: str, read: Callable[[Policy], Any], expected: Any) -> None:
    assert read(policy(body)) == expected


def test_anchors_and_merge_keys_are_followed() -> None:
    text = """\
        version: 1
        defaults:
          backoff: &slow {initial: 5m, max: 1h}
        rules:
          - name: a
            backoff:
              <<: *slow
              max: 2h
          - name: b
            backoff: *slow
        """
    parsed = parse_policy(dedent(text))
    assert parsed.rules[0].settings.backoff == Backoff(initial=300 * S, max=7200 * S)
    assert parsed.rules[1].settings.backoff == Backoff(initial=300 * S, max=3600 * S)


def test_every_key_has_a_default() -> None:
    parsed = parse_policy("version: 1")
    assert parsed.defaults == Settings(
        action="restart",
        hosts="failed",
        max_restarts=3,
        backoff=Backoff(initial=30 * S, factor=2.0, max=600 * S, jitter=0.1),
        deadline=6 * 3600 * S,
        require_unchanged=False,
    )
    assert parsed.rules == ()
    assert parsed.limits == Limits(
        per_job=Budget(10, 3600 * S),
        per_account=Budget(50, 3600 * S),
        global_=Budget(200, 3600 * S),
        per_host=HostLimit(failures=5, window=86400 * S, quarantine=6 * 3600 * S),
        count_manual=False,
    )
    assert parsed.circuit_breaker == CircuitBreaker(0.5, 10, 900 * S, 600 * S)
    assert parsed.signature_breaker is None
    assert parsed.schedule == Schedule()
    assert parsed.defaults.ignore_blackouts is False
    assert parsed.schema_version == 1
    assert parsed.warnings == ()


def test_builtin_policy_text_spells_out_the_defaults() -> None:
    builtin = parse_policy(DEFAULT_POLICY_TEXT, "builtin")
    bare = parse_policy("version: 1", "builtin")
    assert dataclasses.replace(bare, version_hash=builtin.version_hash) == builtin
    assert builtin.rules == ()


def test_shipped_example_policy_is_valid() -> None:
    text = (REPO / "policy.yaml").read_text(encoding="utf-8")
    parsed = parse_policy(text, "policy.yaml")
    assert parsed.warnings == ()
    assert [r.name for r in parsed.rules] == [
        "no-db-migrations",
        "prod-deploys-only-if-untouched",
        "flaky-network",
        "mirror-outage",
        "init-failures",
        "async-timeouts",
    ]
    assert parsed.rule("no-db-migrations") is not None
    assert parsed.rule("missing") is None
    assert parsed.signature_breaker == SignatureBreaker(
        executions=5, jobs=3, window=600 * S, cool_down=900 * S
    )
    assert parsed.circuit_breaker == CircuitBreaker()
    assert parsed.schedule == Schedule()


def uncommented(text: str, first: str) -> str:
    """The commented-out block of ``text`` whose first line is ``first``, taken in."""
    start = text.index(first)
    indent = text.rindex("\n", 0, start) + 1
    prefix = text[indent:start]
    lines = []
    for line in text[indent:].splitlines():
        if not line.startswith(prefix):
            break
        lines.append(line[len(prefix) :])
    return "\n".join(lines) + "\n"


def test_shipped_examples_are_valid_when_uncommented() -> None:
    """policy.yaml shows a systemic rule and a schedule commented out; taken in, they load."""
    text = (REPO / "policy.yaml").read_text(encoding="utf-8")
    rule = indent(uncommented(text, "- name: infra-down"), "  ")
    schedule = uncommented(text, "schedule:")
    parsed = parse_policy(text.replace("\nrules:\n", "\nrules:\n" + rule) + schedule)
    assert parsed.warnings == ()
    assert parsed.rules[0].name == "infra-down"
    assert parsed.rules[0].when.failed_hosts == FailedShare(min=5, ratio_over=0.5)
    assert [b.name for b in parsed.schedule.blackouts] == ["nightly-backup", "weekend-freeze"]
    assert parsed.schedule.blackouts[0].tz == "Europe/Berlin"


def test_design_example_policy_is_valid() -> None:
    text = """\
        version: 1
        defaults:
          action: restart            # restart | skip
          hosts: failed              # failed | none   (none: POST {})
          max_restarts: 3            # restarts respawn issues per execution
          backoff: {initial: 30s, factor: 2, max: 10m, jitter: 0.1}
          deadline: 6h               # no restart later than this after the first failure
        rules:                       # first match wins; a rule overrides any default
          - name: no-db-migrations
            when: {job: "db-migrate*"}          # glob on job id or job description
            action: skip
          - name: flaky-network
            when:
              failure: [unreachable]
              message: "(?i)timed out|connection reset"
            max_restarts: 5
        limits:                      # budgets over sliding windows
          per_job: {restarts: 10, window: 1h}
          global: {restarts: 200, window: 1h}
          per_host: {failures: 5, window: 24h, quarantine: 6h}
        circuit_breaker: {failure_ratio: 0.5, min_restarts: 10, window: 15m, cool_down: 10m}
        """
    parsed = parse_policy(dedent(text))
    assert [r.name for r in parsed.rules] == ["no-db-migrations", "flaky-network"]
    assert parsed.rules[1].settings.max_restarts == 5
    assert parsed.rules[1].settings.backoff == Backoff()


def test_version_hash_is_a_short_content_hash() -> None:
    first = parse_policy("version: 1\n")
    again = parse_policy("version: 1\n", "other.yaml")
    edited = parse_policy("version: 1  # edited\n")
    assert first.version_hash == again.version_hash == policy_version("version: 1\n")
    assert first.version_hash != edited.version_hash
    assert len(first.version_hash) == 12
    assert int(first.version_hash, 16) >= 0


def test_a_rule_after_a_catch_all_is_a_warning() -> None:
    parsed = policy("rules:\n  - name: all\n  - name: never\n    when: {job: x}\n")
    assert [str(w) for w in parsed.warnings] == [
        "policy.yaml:4: rules[1]: rule 'never' is never used: rule 'all' (line 3) has no "
        "conditions and matches every failure first"
    ]


# --- refused policies -------------------------------------------------------------------------

ERRORS: list[tuple[str, str, list[tuple[int, str]]]] = [
    ("empty", "", [(1, "the policy is empty: 'version: 1' is required")]),
    ("comments only", "# nothing\n", [(1, "the policy is empty: 'version: 1' is required")]),
    ("no version", "defaults: {}\n", [(1, "'version: 1' is required")]),
    (
        "version 2",
        "version: 2\n",
        [(1, "version: unsupported policy version 2; this respawn understands version 1")],
    ),
    (
        "version as text",
        "version: '1'\n",
        [(1, "version: unsupported policy version '1'; this respawn understands version 1")],
    ),
    (
        "version true",
        "version: true\n",
        [(1, "version: unsupported policy version true; this respawn understands version 1")],
    ),
    (
        "top level list",
        "- version: 1\n",
        [
            (
                1,
                "the policy must be a mapping of keys to values (starting with 'version: 1'), "
                "got a list",
            )
        ],
    ),
    ("bad yaml", "version: 1\nrules: [\n", [(3, "not valid YAML")]),
    ("tab", "version: 1\ndefaults:\n\taction: skip\n", [(3, "not valid YAML")]),
    ("two documents", "version: 1\n---\nversion: 1\n", [(2, "not valid YAML")]),
    (
        "unknown top key",
        "version: 1\nrule: []\n",
        [
            (
                2,
                "unknown key 'rule' in the policy (did you mean 'rules'?); expected one of: "
                "version, defaults, rules, limits, circuit_breaker",
            )
        ],
    ),
    (
        "unknown defaults key",
        "version: 1\ndefaults:\n  max_restart: 3\n",
        [(3, "unknown key 'max_restart' in defaults (did you mean 'max_restarts'?)")],
    ),
    (
        "unknown backoff key",
        "version: 1\ndefaults:\n  backoff:\n    inital: 1s\n",
        [(4, "unknown key 'inital' in defaults.backoff (did you mean 'initial'?)")],
    ),
    (
        "unknown rule key",
        "version: 1\nrules:\n  - name: a\n    retries: 3\n",
        [(4, "unknown key 'retries' in rules[0]")],
    ),
    (
        "unknown when key",
        "version: 1\nrules:\n  - name: a\n    when:\n      jobs: x\n",
        [(5, "unknown key 'jobs' in rules[0].when (did you mean 'job'?)")],
    ),
    (
        "settings key inside when",
        "version: 1\nrules:\n  - name: a\n    when: {action: skip}\n",
        [(4, "unknown key 'action' in rules[0].when")],
    ),
    (
        "unknown limits key",
        "version: 1\nlimits:\n  per_execution: {restarts: 1}\n",
        [(3, "unknown key 'per_execution' in limits")],
    ),
    (
        "unknown budget key",
        "version: 1\nlimits:\n  per_job: {restart: 1}\n",
        [(3, "unknown key 'restart' in limits.per_job (did you mean 'restarts'?)")],
    ),
    (
        "unknown per_host key",
        "version: 1\nlimits:\n  per_host:\n    failures: 3\n    cooldown: 1h\n",
        [(5, "unknown key 'cooldown' in limits.per_host")],
    ),
    (
        "unknown breaker key",
        "version: 1\ncircuit_breaker:\n  ratio: 0.5\n",
        [(3, "unknown key 'ratio' in circuit_breaker")],
    ),
    (
        "duplicate key",
        "version: 1\ndefaults:\n  action: skip\n  action: restart\n",
        [(4, "duplicate key 'action' in defaults (first given on line 3)")],
    ),
    (
        "non-text key",
        "version: 1\ndefaults:\n  1: skip\n",
        [(3, "defaults: 1 is not a key name")],
    ),
    ("defaults not a mapping", "version: 1\ndefaults: skip\n", [(2, "defaults must be a mapping")]),
    (
        "bad action",
        "version: 1\ndefaults: {action: retry}\n",
        [(2, "defaults.action must be one of restart, skip, got 'retry'")],
    ),
    (
        "bad hosts",
        "version: 1\ndefaults: {hosts: all}\n",
        [(2, "defaults.hosts must be one of failed, all_failed, none, got 'all'")],
    ),
    (
        "hosts null",
        "version: 1\ndefaults: {hosts: null}\n",
        [(2, "defaults.hosts must be one of failed, all_failed, none, got nothing (null)")],
    ),
    (
        "max_restarts text",
        "version: 1\ndefaults: {max_restarts: many}\n",
        [(2, "defaults.max_restarts must be a whole number, got 'many'")],
    ),
    (
        "max_restarts bool",
        "version: 1\ndefaults: {max_restarts: true}\n",
        [(2, "defaults.max_restarts must be a whole number, got true")],
    ),
    (
        "max_restarts float",
        "version: 1\ndefaults: {max_restarts: 2.5}\n",
        [(2, "defaults.max_restarts must be a whole number, got 2.5")],
    ),
    (
        "max_restarts negative",
        "version: 1\ndefaults: {max_restarts: -1}\n",
        [(2, "defaults.max_restarts must be between 0 and 1000, got -1")],
    ),
    (
        "max_restarts huge",
        "version: 1\ndefaults: {max_restarts: 1001}\n",
        [(2, "defaults.max_restarts must be between 0 and 1000, got 1001")],
    ),
    (
        "bad duration",
        "version: 1\ndefaults: {deadline: 6 hours}\n",
        [(2, "defaults.deadline: '6 hours' is not a duration")],
    ),
    (
        "zero deadline",
        "version: 1\ndefaults: {deadline: 0s}\n",
        [(2, "defaults.deadline must be longer than 0s")],
    ),
    (
        "duration as list",
        "version: 1\ndefaults: {deadline: [1h]}\n",
        [(2, "defaults.deadline must be a duration like 30s, 10m or 6h, got a list")],
    ),
    (
        "fractional duration",
        "version: 1\ndefaults:\n  backoff: {initial: 0.5}\n",
        [(3, "defaults.backoff.initial: 0.5 is not a duration: fractions of a second")],
    ),
    (
        "factor below one",
        "version: 1\ndefaults:\n  backoff: {factor: 0.5}\n",
        [(3, "defaults.backoff.factor must be at least 1 and at most 1000, got 0.5")],
    ),
    (
        "factor infinite",
        "version: 1\ndefaults:\n  backoff: {factor: .inf}\n",
        [(3, "defaults.backoff.factor must be a finite number")],
    ),
    (
        "factor text",
        "version: 1\ndefaults:\n  backoff: {factor: double}\n",
        [(3, "defaults.backoff.factor must be a number, got 'double'")],
    ),
    (
        "jitter above one",
        "version: 1\ndefaults:\n  backoff: {jitter: 1.5}\n",
        [(3, "defaults.backoff.jitter must be at least 0 and at most 1, got 1.5")],
    ),
    (
        "initial above max",
        "version: 1\ndefaults:\n  backoff: {initial: 20m}\n",
        [(3, "defaults.backoff: initial 20m is longer than max 10m")],
    ),
    (
        "rule initial above inherited max",
        "version: 1\nrules:\n  - name: a\n    backoff: {initial: 1h}\n",
        [(4, "rules[0].backoff: initial 1h is longer than max 10m (max comes from defaults)")],
    ),
    (
        "backoff not a mapping",
        "version: 1\ndefaults:\n  backoff: 30s\n",
        [(3, "defaults.backoff must be a mapping of keys to values such as {initial: 30s")],
    ),
    (
        "require_unchanged text",
        "version: 1\ndefaults: {require_unchanged: maybe}\n",
        [(2, "defaults.require_unchanged must be true or false, got 'maybe'")],
    ),
    (
        "rules not a list",
        "version: 1\nrules: {name: a}\n",
        [(2, "rules must be a list of rules ('- name: ...'), got a mapping")],
    ),
    (
        "rule not a mapping",
        "version: 1\nrules:\n  - flaky\n",
        [(3, "rules[0] must be a mapping of keys to values")],
    ),
    (
        "rule without name",
        "version: 1\nrules:\n  - action: skip\n",
        [(3, "rules[0]: every rule needs a name")],
    ),
    (
        "empty name",
        "version: 1\nrules:\n  - name: ''\n",
        [(3, "rules[0].name must not be empty")],
    ),
    (
        "numeric name",
        "version: 1\nrules:\n  - name: 42\n",
        [(3, "rules[0].name must be text, got 42 (quote it)")],
    ),
    (
        "long name",
        "version: 1\nrules:\n  - name: " + "x" * 101 + "\n",
        [(3, "rules[0].name must be at most 100 characters long")],
    ),
    (
        "reserved name",
        "version: 1\nrules:\n  - name: defaults\n",
        [(3, "rules[0].name: 'defaults' is reserved for the defaults")],
    ),
    (
        "duplicate rule names",
        "version: 1\nrules:\n  - name: a\n  - name: b\n  - name: a\n",
        [(5, "rules[2].name: duplicate rule name 'a' (first used on line 3)")],
    ),
    (
        "when not a mapping",
        "version: 1\nrules:\n  - name: a\n    when: db-*\n",
        [(4, "rules[0].when must be a mapping")],
    ),
    (
        "empty glob",
        "version: 1\nrules:\n  - name: a\n    when: {job: ''}\n",
        [(4, "rules[0].when.job must not be empty")],
    ),
    (
        "empty list",
        "version: 1\nrules:\n  - name: a\n    when: {host: []}\n",
        [(4, "rules[0].when.host must not be an empty list")],
    ),
    (
        "numeric glob",
        "version: 1\nrules:\n  - name: a\n    when: {account: 1234}\n",
        [(4, "rules[0].when.account must be text, got 1234 (quote it)")],
    ),
    (
        "unknown failure class on its own line",
        "version: 1\nrules:\n  - name: a\n    when:\n      failure:\n        - unreachable\n"
        "        - timeout\n",
        [
            (
                7,
                "rules[0].when.failure: 'timeout' is not a failure class; use unreachable, "
                "task_failed, async_failed, init_failure, unknown",
            )
        ],
    ),
    (
        "status that is never decided",
        "version: 1\nrules:\n  - name: a\n    when: {status: [FAILURE, SUCCESS]}\n",
        [
            (
                4,
                "rules[0].when.status: 'SUCCESS' is never decided; respawn decides only FAILURE "
                "and INIT_FAILURE executions",
            )
        ],
    ),
    (
        "bad regex",
        "version: 1\nrules:\n  - name: a\n    when:\n      message: '(?i)timed (out'\n",
        [(5, "rules[0].when.message: invalid regular expression '(?i)timed (out': missing )")],
    ),
    (
        "limits null",
        "version: 1\nlimits: null\n",
        [(2, "limits must be a mapping of keys to values; to turn one limit off, set it to null")],
    ),
    (
        "budget negative",
        "version: 1\nlimits:\n  global: {restarts: -1}\n",
        [(3, "limits.global.restarts must be between 0 and 1000000, got -1")],
    ),
    (
        "budget zero window",
        "version: 1\nlimits:\n  per_job: {window: 0s}\n",
        [(3, "limits.per_job.window must be longer than 0s")],
    ),
    (
        "budget as number",
        "version: 1\nlimits:\n  per_account: 10\n",
        [(3, "limits.per_account must be a mapping of keys to values such as {restarts: 10")],
    ),
    (
        "per_host zero failures",
        "version: 1\nlimits:\n  per_host: {failures: 0}\n",
        [(3, "limits.per_host.failures must be between 1 and 1000000, got 0")],
    ),
    (
        "per_host zero quarantine",
        "version: 1\nlimits:\n  per_host: {quarantine: 0}\n",
        [(3, "limits.per_host.quarantine must be longer than 0s")],
    ),
    (
        "count_manual text",
        "version: 1\nlimits:\n  count_manual: sometimes\n",
        [(3, "limits.count_manual must be true or false, got 'sometimes'")],
    ),
    (
        "breaker ratio zero",
        "version: 1\ncircuit_breaker: {failure_ratio: 0}\n",
        [(2, "circuit_breaker.failure_ratio must be more than 0 and at most 1, got 0")],
    ),
    (
        "breaker ratio above one",
        "version: 1\ncircuit_breaker: {failure_ratio: 1.5}\n",
        [(2, "circuit_breaker.failure_ratio must be more than 0 and at most 1, got 1.5")],
    ),
    (
        "breaker min_restarts zero",
        "version: 1\ncircuit_breaker: {min_restarts: 0}\n",
        [(2, "circuit_breaker.min_restarts must be between 1 and 1000000, got 0")],
    ),
    (
        "breaker bad window",
        "version: 1\ncircuit_breaker:\n  window: soon\n",
        [(3, "circuit_breaker.window: 'soon' is not a duration")],
    ),
    (
        "breaker as text",
        "version: 1\ncircuit_breaker: off\n",
        [(2, "circuit_breaker must be a mapping of keys to values")],
    ),
    # failed_hosts
    (
        "unknown failed_hosts key",
        "version: 1\nrules:\n  - name: a\n    when:\n      failed_hosts: {ratio: 0.5}\n",
        [
            (
                5,
                "unknown key 'ratio' in rules[0].when.failed_hosts (did you mean 'ratio_over'?); "
                "expected one of: min, max, ratio_over",
            )
        ],
    ),
    (
        "failed_hosts misspelt",
        "version: 1\nrules:\n  - name: a\n    when:\n      failed_host: {min: 1}\n",
        [(5, "unknown key 'failed_host' in rules[0].when (did you mean 'failed_hosts'?)")],
    ),
    (
        "failed_hosts without bounds",
        "version: 1\nrules:\n  - name: a\n    when: {failed_hosts: {}}\n",
        [(4, "rules[0].when.failed_hosts needs at least one of min, max, ratio_over")],
    ),
    (
        "failed_hosts as a number",
        "version: 1\nrules:\n  - name: a\n    when: {failed_hosts: 3}\n",
        [(4, "rules[0].when.failed_hosts must be a mapping of keys to values such as")],
    ),
    (
        "failed_hosts min negative",
        "version: 1\nrules:\n  - name: a\n    when: {failed_hosts: {min: -1}}\n",
        [(4, "rules[0].when.failed_hosts.min must be between 0 and 1000000, got -1")],
    ),
    (
        "failed_hosts max fraction",
        "version: 1\nrules:\n  - name: a\n    when: {failed_hosts: {max: 2.5}}\n",
        [(4, "rules[0].when.failed_hosts.max must be a whole number, got 2.5")],
    ),
    (
        "failed_hosts max below min",
        "version: 1\nrules:\n  - name: a\n    when:\n      failed_hosts:\n        min: 5\n"
        "        max: 2\n",
        [(7, "rules[0].when.failed_hosts: max 2 is less than min 5")],
    ),
    (
        "ratio_over one",
        "version: 1\nrules:\n  - name: a\n    when: {failed_hosts: {ratio_over: 1}}\n",
        [(4, "rules[0].when.failed_hosts.ratio_over must be at least 0 and less than 1, got 1")],
    ),
    (
        "ratio_over negative",
        "version: 1\nrules:\n  - name: a\n    when: {failed_hosts: {ratio_over: -0.1}}\n",
        [(4, "rules[0].when.failed_hosts.ratio_over must be at least 0 and less than 1")],
    ),
    (
        "ratio_over as percent",
        "version: 1\nrules:\n  - name: a\n    when: {failed_hosts: {ratio_over: 50%}}\n",
        [(4, "rules[0].when.failed_hosts.ratio_over must be a number, got '50%'")],
    ),
    # ignore_blackouts
    (
        "ignore_blackouts text",
        "version: 1\nrules:\n  - name: a\n    ignore_blackouts: always\n",
        [(4, "rules[0].ignore_blackouts must be true or false, got 'always'")],
    ),
    (
        "ignore_blackouts misspelt",
        "version: 1\ndefaults:\n  ignore_blackout: true\n",
        [(3, "unknown key 'ignore_blackout' in defaults (did you mean 'ignore_blackouts'?)")],
    ),
    # per_signature
    (
        "per_signature misspelt",
        "version: 1\ncircuit_breaker:\n  per_signatures: {}\n",
        [(3, "unknown key 'per_signatures' in circuit_breaker (did you mean 'per_signature'?)")],
    ),
    (
        "unknown per_signature key",
        "version: 1\ncircuit_breaker:\n  per_signature:\n    execution: 5\n",
        [
            (
                4,
                "unknown key 'execution' in circuit_breaker.per_signature (did you mean "
                "'executions'?); expected one of: executions, jobs, window, cool_down",
            )
        ],
    ),
    (
        "per_signature zero executions",
        "version: 1\ncircuit_breaker:\n  per_signature: {executions: 0}\n",
        [(3, "circuit_breaker.per_signature.executions must be between 1 and 1000000, got 0")],
    ),
    (
        "per_signature zero jobs",
        "version: 1\ncircuit_breaker:\n  per_signature: {jobs: 0}\n",
        [(3, "circuit_breaker.per_signature.jobs must be between 1 and 1000000, got 0")],
    ),
    (
        "per_signature zero window",
        "version: 1\ncircuit_breaker:\n  per_signature: {window: 0s}\n",
        [(3, "circuit_breaker.per_signature.window must be longer than 0s")],
    ),
    (
        "per_signature bad cool_down",
        "version: 1\ncircuit_breaker:\n  per_signature:\n    cool_down: a while\n",
        [(4, "circuit_breaker.per_signature.cool_down: 'a while' is not a duration")],
    ),
    (
        "per_signature as text",
        "version: 1\ncircuit_breaker:\n  per_signature: on\n",
        [(3, "circuit_breaker.per_signature must be a mapping of keys to values such as")],
    ),
    # schedule
    (
        "schedule misspelt",
        "version: 1\nschedules: {}\n",
        [(2, "unknown key 'schedules' in the policy (did you mean 'schedule'?)")],
    ),
    (
        "schedule key misspelt",
        "version: 1\nschedule:\n  blackout: []\n",
        [(3, "unknown key 'blackout' in schedule (did you mean 'blackouts'?)")],
    ),
    (
        "blackouts not a list",
        "version: 1\nschedule:\n  blackouts: {name: x}\n",
        [(3, "schedule.blackouts must be a list of windows ('- name: ...'), got a mapping")],
    ),
    (
        "blackout not a mapping",
        "version: 1\nschedule:\n  blackouts:\n    - nightly\n",
        [(4, "schedule.blackouts[0] must be a mapping of keys to values such as")],
    ),
    (
        "unknown blackout key",
        "version: 1\nschedule:\n  blackouts:\n    - name: x\n      from: '01:00'\n"
        "      to: '02:00'\n      timezone: UTC\n",
        [(7, "unknown key 'timezone' in schedule.blackouts[0]; expected one of: name, days, ")],
    ),
    (
        "blackout without name",
        "version: 1\nschedule:\n  blackouts:\n    - {from: '01:00', to: '02:00'}\n",
        [(4, "schedule.blackouts[0]: every blackout needs a name")],
    ),
    (
        "blackout without times",
        "version: 1\nschedule:\n  blackouts:\n    - name: x\n",
        [
            (4, "schedule.blackouts[0]: 'from' is required, a local time like \"23:00\""),
            (4, "schedule.blackouts[0]: 'to' is required, a local time like \"23:00\""),
        ],
    ),
    (
        "duplicate blackout names",
        "version: 1\nschedule:\n  blackouts:\n    - {name: x, from: '01:00', to: '02:00'}\n"
        "    - {name: x, from: '03:00', to: '04:00'}\n",
        [(5, "schedule.blackouts[1].name: duplicate blackout name 'x' (first used on line 4)")],
    ),
    (
        "blackout name with spaces around",
        "version: 1\nschedule:\n  blackouts:\n    - {name: ' x', from: '01:00', to: '02:00'}\n",
        [(4, "schedule.blackouts[0].name must not start or end with spaces")],
    ),
    (
        "time without colon",
        "version: 1\nschedule:\n  blackouts:\n    - {name: x, from: 2300, to: '02:00'}\n",
        [(4, 'schedule.blackouts[0].from must be a local time like "23:00", got 2300')],
    ),
    (
        "time with seconds",
        "version: 1\nschedule:\n  blackouts:\n    - {name: x, from: '01:00', to: '02:00:30'}\n",
        [(4, "schedule.blackouts[0].to must be a local time like \"23:00\", got '02:00:30'")],
    ),
    (
        "hour out of range",
        "version: 1\nschedule:\n  blackouts:\n    - name: x\n      from: 25:00\n"
        "      to: '02:00'\n",
        [(5, 'schedule.blackouts[0].from: \'25:00\' is not a time of day; use "00:00" to "23:59"')],
    ),
    (
        "minute out of range",
        "version: 1\nschedule:\n  blackouts:\n    - name: x\n      from: '01:00'\n"
        "      to: '02:60'\n",
        [
            (
                6,
                "schedule.blackouts[0].to: '02:60' is not a time of day; use \"00:00\" to "
                '"24:00" for the end of the day',
            )
        ],
    ),
    (
        "24:00 only as the end",
        "version: 1\nschedule:\n  blackouts:\n    - {name: x, from: '24:00', to: '02:00'}\n",
        [(4, "schedule.blackouts[0].from: '24:00' is not a time of day")],
    ),
    (
        "time as null",
        "version: 1\nschedule:\n  blackouts:\n    - {name: x, from: '01:00', to: }\n",
        [(4, 'schedule.blackouts[0].to must be a local time like "23:00", got nothing (null)')],
    ),
    (
        "empty window",
        "version: 1\nschedule:\n  blackouts:\n    - name: x\n      from: 23:00\n"
        "      to: '23:00'\n",
        [
            (
                6,
                "schedule.blackouts[0]: from and to are both 23:00, an empty window; for a "
                'whole day use from: "00:00", to: "24:00"',
            )
        ],
    ),
    (
        "unknown day",
        "version: 1\nschedule:\n  blackouts:\n    - name: x\n      days: [mon, tues]\n"
        "      from: '01:00'\n      to: '02:00'\n",
        [
            (
                5,
                "schedule.blackouts[0].days: 'tues' is not a day (did you mean 'tue'?); "
                "expected one of: mon, tue, wed, thu, fri, sat, sun",
            )
        ],
    ),
    (
        "days empty",
        "version: 1\nschedule:\n  blackouts:\n"
        "    - {name: x, days: [], from: '1:00', to: '2:00'}\n",
        [(4, "schedule.blackouts[0].days must not be an empty list")],
    ),
    (
        "unknown time zone",
        "version: 1\nschedule:\n  blackouts:\n    - name: x\n      from: '01:00'\n"
        "      to: '02:00'\n      tz: Europe/Berlim\n",
        [
            (
                7,
                "schedule.blackouts[0].tz: unknown time zone 'Europe/Berlim' (did you mean "
                "'Europe/Berlin'?); use an IANA name such as Europe/Berlin, America/New_York "
                "or UTC",
            )
        ],
    ),
    (
        "time zone in the wrong case",
        "version: 1\nschedule:\n  blackouts:\n    - {name: x, from: '1:00', to: '2:00', "
        "tz: america/new_york}\n",
        [
            (
                4,
                "schedule.blackouts[0].tz: unknown time zone 'america/new_york' (did you mean "
                "'America/New_York'?)",
            )
        ],
    ),
    (
        "time zone that is a path",
        "version: 1\nschedule:\n  blackouts:\n    - {name: x, from: '1:00', to: '2:00', "
        "tz: ../../etc/passwd}\n",
        [(4, "schedule.blackouts[0].tz: unknown time zone '../../etc/passwd'")],
    ),
    (
        "windows covering the whole week",
        "version: 1\nschedule:\n  blackouts:\n    - {name: day, from: '06:00', to: '18:00'}\n"
        "    - {name: night, from: '18:00', to: '06:00'}\n",
        [
            (
                4,
                "schedule.blackouts: the windows in UTC cover the whole week, so no restart "
                "could ever be due",
            )
        ],
    ),
]


@pytest.mark.parametrize(("text", "expected"), [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS])
def test_refused_policies_name_the_line(text: str, expected: list[tuple[int, str]]) -> None:
    found = problems_of(text)
    assert len(found) == len(expected), found
    for (line, message), (want_line, want_start) in zip(found, expected, strict=True):
        assert line == want_line, (line, message)
        assert message.startswith(want_start), message


def test_every_problem_is_reported_in_line_order() -> None:
    text = """\
        version: 3
        defaults:
          max_restart: 3
          backoff: {initial: 20m, factor: 0.5}
        rules:
          - name: a
            when: {job: "db-*", failure: [timeout], message: "x("}
            action: nope
          - name: a
            deadline: 0s
          - when: {}
        limits:
          per_job: null
          global: {restarts: -1}
        circuit_breaker: {failure_ratio: 0}
        bogus: 1
        """
    found = problems_of(text)
    assert [line for line, _ in found] == [1, 3, 4, 4, 7, 7, 8, 9, 10, 11, 14, 15, 16]


def test_problems_format_as_file_line_message() -> None:
    with pytest.raises(PolicyError) as caught:
        parse_policy("version: 1\nbogus: 1\n", "/etc/respawn/policy.yaml")
    problem = caught.value.problems[0]
    assert problem == PolicyProblem("/etc/respawn/policy.yaml", 2, problem.message)
    assert str(problem).startswith("/etc/respawn/policy.yaml:2: unknown key 'bogus'")
    assert str(caught.value) == str(problem)


def test_regexes_and_globs_are_compiled_at_load() -> None:
    parsed = policy("rules:\n  - name: a\n    when: {job: 'db-*', message: 'timed out'}\n")
    when = parsed.rules[0].when
    assert when.job[0].compiled.pattern
    assert when.message[0].compiled.search("ssh: timed out")


@pytest.mark.parametrize(
    "tag",
    [
        "!!python/object/apply:os.system ['touch {marker}']",
        "!!python/name:os.system",
        "!!binary aGVsbG8=",
    ],
)
def test_yaml_tags_are_refused_and_never_run(tmp_path: Path, tag: str) -> None:
    """The policy is read with a safe loader: a tag is an error, not a constructor call."""
    marker = tmp_path / "ran"
    text = f"version: 1\ndefaults:\n  max_restarts: {tag.format(marker=marker)}\n"

    with pytest.raises(PolicyError):
        parse_policy(text)
    assert not marker.exists()


# --- the schedule -----------------------------------------------------------------------------


def blackouts_of(text: str) -> list[Any]:
    return list(
        policy("schedule:\n  blackouts:\n" + indent(dedent(text), "    ")).schedule.blackouts
    )


@pytest.mark.parametrize(
    ("written", "read"),
    [
        ("23:00", time(23, 0)),  # YAML 1.1 reads this as the number 1380: the text counts
        ("'23:00'", time(23, 0)),
        ('"23:00"', time(23, 0)),
        ("06:00", time(6, 0)),
        ("6:05", time(6, 5)),
        ("'0:00'", time(0, 0)),
        ("23:59", time(23, 59)),
    ],
)
def test_times_read_quoted_or_not(written: str, read: time) -> None:
    (blackout,) = blackouts_of(f"    - {{name: x, from: {written}, to: '12:30'}}\n")
    assert blackout.start == read


def test_a_blackout_in_full() -> None:
    (blackout,) = blackouts_of(
        """\
        - name: nightly-backup
          days: [Mon, tue, Wednesday]
          from: 23:00
          to: 06:00
          tz: Europe/Berlin
        """
    )
    assert blackout.name == "nightly-backup"
    assert blackout.days == frozenset({0, 1, 2})
    assert (blackout.start, blackout.end) == (time(23, 0), time(6, 0))
    assert blackout.tz == "Europe/Berlin"
    assert blackout.zone.key == "Europe/Berlin"
    assert blackout.line == 4


def test_blackout_defaults_every_day_in_utc() -> None:
    (blackout,) = blackouts_of("    - {name: x, from: '22:00', to: '24:00'}\n")
    assert blackout.days == frozenset(range(7))
    assert blackout.end is None  # midnight at the end of the day
    assert (blackout.tz, blackout.zone.key) == ("UTC", "UTC")


def test_one_day_as_text() -> None:
    (blackout,) = blackouts_of("    - {name: x, days: sun, from: '00:00', to: '24:00'}\n")
    assert blackout.days == frozenset({6})


def test_every_day_but_a_minute_is_allowed() -> None:
    (blackout,) = blackouts_of("    - {name: x, from: '00:01', to: '24:00'}\n")
    assert blackout.start == time(0, 1)


def test_windows_in_two_zones_are_checked_each_on_its_own() -> None:
    found = blackouts_of(
        """\
        - {name: a, from: '00:00', to: '13:00'}
        - {name: b, from: '21:00', to: '10:00', tz: Asia/Tokyo}
        """
    )
    assert [b.name for b in found] == ["a", "b"]


def test_more_jobs_than_executions_is_a_warning() -> None:
    parsed = policy("circuit_breaker:\n  per_signature: {executions: 2, jobs: 4}\n")
    assert [str(w) for w in parsed.warnings] == [
        "policy.yaml:3: circuit_breaker.per_signature: jobs 4 is more than executions 2; each "
        "execution belongs to one job, so it takes 4 executions to open"
    ]


def test_every_schedule_problem_is_reported_in_line_order() -> None:
    text = """\
        version: 1
        schedule:
          blackouts:
            - name: a
              days: [sat, sunday, holiday]
              from: 25:00
              to: 24:00
              tz: Mars/Olympus
            - name: a
              from: '01:00'
              to: '01:00'
            - from: 1:00
              to: 2:00
        """
    found = problems_of(text)
    assert [line for line, _ in found] == [5, 6, 8, 9, 11, 12]


@pytest.mark.parametrize("path", ["policy.yaml", "app/demo_policy.yaml"])
@pytest.mark.parametrize(
    "message",
    [
        "async task did not complete within the requested time - 30s",  # Ansible's words
        "async task did not complete within the requested time",  # the simulator's
        "Timed out waiting for the lock",
    ],
)
def test_the_shipped_async_timeouts_rule_skips_an_async_timeout(path: str, message: str) -> None:
    parsed = parse_policy((REPO / path).read_text(encoding="utf-8"), path)
    failed = (HostFailure("worker2", "async_failed", message, 0),)

    decision = decide_restart(parsed, make_input(hosts=failed, job_description="nightly"))

    assert (decision.rule, decision.action) == ("async-timeouts", "skip")
