"""A gate that fails for some hosts: what it says, for one host, a few, and more than it lists.

These tests kill the mutants of app/policy/gates.py that the engine tests leave alive
(docs/TESTING.md): the check's code, verdict and detail, and the decision's sentence, which
`respawn policy check --explain` and the admin UI show.
"""

from __future__ import annotations

from app.policy.gates import Gate, gate_for_all
from app.policy.model import Check, ExcludedHost


def held(*names: str) -> list[ExcludedHost]:
    return [ExcludedHost(n, "quarantine", f"{n} failed 5 times") for n in names]


def test_a_gate_with_nothing_blocking_passes_with_its_fine_detail() -> None:
    assert gate_for_all("quarantine", [], "quarantined", "no host is quarantined") == Gate(
        Check("quarantine", True, "no host is quarantined")
    )


def test_one_blocking_host_is_named_in_the_sentence() -> None:
    gate = gate_for_all("quarantine", held("web1"), "quarantined", "fine", " (until 14:00)")

    assert gate == Gate(
        Check("quarantine", False, "web1: web1 failed 5 times"),
        "skip: host web1: web1 failed 5 times (until 14:00)",
    )


def test_as_many_blocking_hosts_as_are_listed_are_all_detailed() -> None:
    names = [f"web{n}" for n in range(1, 6)]

    gate = gate_for_all("quarantine", held(*names), "quarantined", "fine")

    assert gate.check == Check(
        "quarantine", False, "; ".join(f"{n}: {n} failed 5 times" for n in names)
    )
    assert gate.reason == "skip: 5 hosts are quarantined: web1, web2, web3, web4, web5"


def test_more_blocking_hosts_than_are_listed_are_counted() -> None:
    names = [f"web{n}" for n in range(1, 8)]

    gate = gate_for_all("quarantine", held(*names), "quarantined", "fine", ".")

    listed = "; ".join(f"{n}: {n} failed 5 times" for n in names[:5])
    assert gate.check == Check("quarantine", False, f"{listed}; and 2 more")
    assert gate.reason == (
        "skip: 7 hosts are quarantined: web1, web2, web3, web4, web5 and 2 more."
    )
