"""Why a host does not satisfy a rule, as `respawn policy check --explain` and decisions say it.

These tests kill the mutants of app/policy/matching.py that the engine tests leave alive
(docs/TESTING.md): which condition is named first, and the exact wording of each.
"""

from __future__ import annotations

from app.policy.matching import FailedHost, host_mismatch, match_rule
from app.policy.model import When
from tests.policy.helpers import host, make_input, policy


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


def test_a_failure_without_hosts_has_no_message_to_match() -> None:
    rules = policy(
        "rules:\n  - name: any-text\n    when: {message: '.*'}\n    action: skip\n"
        "  - name: no-text\n    when: {message: '^$'}\n    action: skip\n"
    ).rules
    inp = make_input(hosts=(), status="INIT_FAILURE")

    assert match_rule(rules[1].when, inp, (), explain=False)[0] is True
    assert match_rule(rules[0].when, inp, (), explain=True)[2] == [
        "no failed hosts; the INIT_FAILURE failure counts as init_failure"
    ]


def test_an_explanation_says_which_conditions_held_and_which_did_not() -> None:
    conditions = when("{status: [FAILURE, INIT_FAILURE], account: 'AC*', job: 'deploy*'}")
    inp = make_input(hosts=(host(),), status="FAILURE", account="ACME", job_description=None)

    matched, _, reasons = match_rule(conditions, inp, (), explain=True)

    assert matched is False
    assert reasons == [
        "status FAILURE is in [FAILURE, INIT_FAILURE]",
        "account 'ACME' matches 'AC*'",
        f"job {inp.job_id!r} does not match 'deploy*'",
    ]


def test_an_explanation_of_a_status_mismatch_does_not_match() -> None:
    conditions = when("{status: [FAILURE, INIT_FAILURE]}")

    matched, _, reasons = match_rule(conditions, make_input(status="SUCCESS"), (), explain=True)

    assert matched is False
    assert reasons == ["status SUCCESS is not in [FAILURE, INIT_FAILURE]"]


def test_an_explanation_of_an_account_mismatch_does_not_match() -> None:
    matched, _, _ = match_rule(when("{account: 'OTHER'}"), make_input(), (), explain=True)

    assert matched is False


def test_an_explanation_names_the_matching_job_and_its_description() -> None:
    inp = make_input(job_description="deploy web")

    matched, _, reasons = match_rule(when("{job: 'deploy*'}"), inp, (), explain=True)

    assert matched is True
    assert reasons == [f"job {inp.job_id!r} (description 'deploy web') matches 'deploy*'"]


def test_an_explanation_lists_at_most_five_hosts_that_do_not_match() -> None:
    hosts = tuple(FailedHost(f"web{n}", "task_failed", "", None) for n in range(1, 8))
    five = tuple(hosts[:5])

    matched, _, seven = match_rule(when("{host: 'db*'}"), make_input(), hosts, explain=True)
    _, _, exactly = match_rule(when("{host: 'db*'}"), make_input(), five, explain=True)

    assert matched is False
    assert seven[-1].endswith("web5 does not match host 'db*'; and 2 more")
    assert exactly[-1].endswith("web5 does not match host 'db*'")
