"""The pure parts of policy suggestions: intervals, message patterns, rules and the candidate."""

from __future__ import annotations

import re

import pytest
import yaml

from app.core.insights_read import SignatureStats, Tally
from app.core.suggest import candidate_text, message_pattern, suggest_for, wilson
from app.policy import normalise_message, parse_policy

POLICY = parse_policy("version: 1\ndefaults: {max_restarts: 2}\n", "p.yaml")


@pytest.mark.parametrize(
    ("successes", "samples", "low", "high"),
    [(0, 14, 0.0, 0.215), (7, 14, 0.268, 0.732), (14, 14, 0.785, 1.0), (32, 37, 0.72, 0.94)],
)
def test_wilson_intervals(successes: int, samples: int, low: float, high: float) -> None:
    found = wilson(successes, samples)

    assert found == pytest.approx((low, high), abs=0.005)


def test_no_samples_say_nothing() -> None:
    assert wilson(0, 0) == (0.0, 1.0)


@pytest.mark.parametrize(
    "message",
    [
        "Failed to connect to db7.example.com port 5432: Connection refused",
        "Failed to connect to 10.0.0.7 port 22:  Connection refused\nmore text",
        "Failed  to\nconnect to host.internal.lan port 1: Connection refused",
    ],
)
def test_a_message_pattern_finds_the_messages_of_its_signature(message: str) -> None:
    text = normalise_message("Failed to connect to db1.example.com port 5432: Connection refused")

    assert re.search(message_pattern(text), message)
    assert not re.search(message_pattern(text), "Failed to connect: timed out")


def stats(**attempts: tuple[int, int]) -> SignatureStats:
    found = SignatureStats("abcdef0123456789", "unreachable", "ssh: <host> refused")
    for name, (recovered, settled) in attempts.items():
        tally = Tally(restarts=settled, settled=settled, recovered=recovered)
        found.by_attempt[int(name[1:])] = tally
        found.total.settled += settled
        found.total.recovered += recovered
    return found


def test_a_skip_needs_enough_samples() -> None:
    assert suggest_for(stats(a1=(0, 9)), POLICY, 10) is None
    found = suggest_for(stats(a1=(0, 14)), POLICY, 10)
    assert found is not None and found.kind == "skip"
    assert found.evidence.startswith("0 of 14 restarts of `unreachable: ssh: <host> refused`")


def test_more_restarts_when_the_last_attempt_still_succeeds() -> None:
    found = suggest_for(stats(a1=(1, 40), a2=(30, 39)), POLICY, 10)

    assert found is not None and found.kind == "max_restarts"
    assert found.rule["max_restarts"] == 4


def test_nothing_for_a_signature_that_recovers_at_once() -> None:
    assert suggest_for(stats(a1=(38, 40), a2=(2, 2)), POLICY, 10) is None


def test_the_candidate_puts_the_suggestions_first() -> None:
    found = suggest_for(stats(a1=(0, 14)), POLICY, 10)
    assert found is not None
    base = "version: 1\nrules:\n  - name: mine\n    action: skip\n"

    document = yaml.safe_load(candidate_text(base, [found]))

    assert [r["name"] for r in document["rules"]] == [found.name, "mine"]
    parse_policy(candidate_text(base, [found]), "candidate.yaml")
