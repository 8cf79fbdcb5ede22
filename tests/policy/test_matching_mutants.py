"""Why a host does not satisfy a rule, as `respawn policy check --explain` and decisions say it.

These tests kill the mutants of app/policy/matching.py that the engine tests leave alive
(docs/TESTING.md): which condition is named first, and the exact wording of each.
"""

from __future__ import annotations

from app.policy.matching import FailedHost, host_mismatch
from app.policy.model import When
from tests.policy.helpers import policy


def when(conditions: str) -> When:
    return policy(f"rules:\n  - name: r\n    when: {conditions}\n    action: skip\n").rules[0].when


STAND_IN = FailedHost("", "unknown", "", None, stand_in=True)


def test_a_failure_without_hosts_never_matches_a_host_glob() -> None:
    assert host_mismatch(when("{host: '*'}"), STAND_IN) == (
        "(no failed host) does not match host '*'"
    )


def test_a_failure_without_hosts_is_named_as_such() -> None:
    assert host_mismatch(when("{failure: [unreachable]}"), STAND_IN) == (
        "(no failed host): failure unknown is not in [unreachable]"
    )


def test_a_host_outside_the_globs_is_named_first() -> None:
    web1 = FailedHost("web1", "unreachable", "boom", None)

    assert host_mismatch(when("{host: ['db*', 'cache*'], failure: [task_failed]}"), web1) == (
        "web1 does not match host 'db*' or 'cache*'"
    )


def test_a_host_inside_the_globs_is_judged_by_its_failure_class() -> None:
    web1 = FailedHost("web1", "unreachable", "boom", None)

    assert host_mismatch(when("{host: 'web*', failure: [task_failed, unknown]}"), web1) == (
        "web1: failure unreachable is not in [task_failed, unknown]"
    )


def test_a_message_mismatch_quotes_the_message_and_every_pattern() -> None:
    web1 = FailedHost("web1", "task_failed", "disk full", None)

    assert host_mismatch(when("{message: ['timed out', 'refused']}"), web1) == (
        "web1: message 'disk full' does not match 'timed out' or 'refused'"
    )
