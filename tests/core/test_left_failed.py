"""`left_failed`: which hosts a partial restart left failed, from the record alone."""

from __future__ import annotations

import pytest

from app.core.left_failed import left_failed
from app.models import Decision, Execution, HostFailure, Restart


def execution(run_index: int) -> Execution:
    return Execution(id=1, execution_id="e1", status="SUCCESS", run_index=run_index)


def failed(host: str, run: int, failure_class: str = "task_failed") -> HostFailure:
    return HostFailure(host=host, run_index=run, failure_class=failure_class, message="boom")


def restart(
    run: int, hosts: list[str], state: str = "done", outcome: str = "restarted", decision: int = 0
) -> Restart:
    return Restart(
        run_index=run, hosts=hosts, state=state, outcome=outcome, decision_id=decision or run + 10
    )


def decision(run: int, excluded: dict[str, str]) -> Decision:
    return Decision(
        id=run + 10,
        run_index=run,
        excluded_hosts=[{"host": h, "reason": r} for h, r in excluded.items()],
    )


def hosts_left(run_index: int, failures: list[HostFailure], restarts: list[Restart]) -> list[str]:
    return [x.host for x in left_failed(execution(run_index), failures, restarts, [])]


def test_a_host_left_out_of_the_restart_is_left_failed_with_the_rules_reason() -> None:
    found = left_failed(
        execution(1),
        [failed("web2", 0, "unreachable"), failed("web3", 0)],
        [restart(0, ["web2"])],
        [decision(0, {"web3": "not matched by rule flaky-network"})],
    )

    assert [(x.host, x.run_index, x.failure_class, x.reason) for x in found] == [
        ("web3", 0, "task_failed", "not matched by rule flaky-network")
    ]


def test_without_a_recorded_reason_the_restart_is_named() -> None:
    found = left_failed(execution(1), [failed("web3", 0)], [restart(0, ["web2"])], [])

    assert found[0].reason == "not named by the restart after run 1"


@pytest.mark.parametrize(
    ("run_index", "failures", "restarts", "left"),
    [
        # A later restart of every host (no host list) ran it again.
        (2, [failed("web3", 0)], [restart(0, ["web2"]), restart(1, [])], []),
        # A later partial restart named it.
        (2, [failed("web3", 0)], [restart(0, ["web2"]), restart(1, ["web3"])], []),
        # Two partial restarts in a row without it: still left failed.
        (2, [failed("web3", 0)], [restart(0, ["web2"]), restart(1, ["web2"])], ["web3"]),
        # A run respawn did not start (no restart recorded for it) may have run every host.
        (2, [failed("web3", 0)], [restart(0, ["web2"])], []),
        # It failed again in a later run it was part of: judged by that run.
        (2, [failed("web3", 0), failed("web3", 1)], [restart(0, ["web3"]), restart(1, [])], []),
        (
            2,
            [failed("web3", 0), failed("web3", 1)],
            [restart(0, ["web3"]), restart(1, ["web2"])],
            ["web3"],
        ),
        # Failed in the newest run: a current failure, not a left-out one.
        (1, [failed("web3", 1)], [restart(0, ["web2"])], []),
        # A restart not carried out (cancelled, refused, still pending) started no run.
        (
            1,
            [failed("web3", 0)],
            [restart(0, ["web2"], state="cancelled", outcome="cancelled")],
            [],
        ),
        (1, [failed("web3", 0)], [restart(0, ["web2"], state="pending", outcome="")], []),
        # Nothing failed.
        (1, [], [restart(0, ["web2"])], []),
    ],
)
def test_which_hosts_are_left_failed(
    run_index: int, failures: list[HostFailure], restarts: list[Restart], left: list[str]
) -> None:
    assert hosts_left(run_index, failures, restarts) == left
