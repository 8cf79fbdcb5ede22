"""Error signatures: the message normaliser, the execution's signature, the per-signature
breaker."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest

from app.policy import (
    MESSAGE_SCAN_LIMIT,
    HostFailure,
    Sighting,
    Signature,
    SignatureBreaker,
    failure_signature,
    normalise_message,
    signature_state,
)

from .helpers import NOW, minutes

# --- the normaliser ---------------------------------------------------------------------------

NORMALISED: list[tuple[str, str, str]] = [
    ("plain", "Connection refused", "Connection refused"),
    ("number", "exit code 127", "exit code <n>"),
    ("numbers in a word", "web12 failed 3 times", "web<n> failed <n> times"),
    ("decimal", "took 1.25 s, version 2.14.1", "took <n> s, version <n>"),
    (
        "uuid",
        "job 44fdcfa2-0000-4000-8000-00000000000A not found",
        "job <uuid> not found",
    ),
    ("ipv4", "connect to host 10.0.0.5 port 22", "connect to host <ip> port <n>"),
    ("ipv4 with port", "GET 192.168.1.20:8080 failed", "GET <ip> failed"),
    ("ipv4 at a full stop", "No route to 10.1.2.3.", "No route to <ip>."),
    ("ipv6", "connect to 2001:db8::1 failed", "connect to <ip> failed"),
    ("ipv6 loopback", "listening on ::1", "listening on <ip>"),
    ("ipv6 full", "from fe80:0:0:0:202:b3ff:fe1e:8329 x", "from <ip> x"),
    ("ipv6 with port", "connect [2001:db8::42]:443: refused", "connect <ip>: refused"),
    ("ipv6 with zone", "fe80::1%eth0 unreachable", "<ip> unreachable"),
    ("ipv6 then a colon", "2001:db8::7: timed out", "<ip>: timed out"),
    ("not ipv6: a clock", "at 12:30:45", "at <n>:<n>:<n>"),
    ("not ipv6: C++", "std::vector failed", "std::vector failed"),
    ("hex id", "commit 3f2a9c1b0d4e missing", "commit <hex> missing"),
    ("hex 0x", "segfault at 0x7ffd", "segfault at <hex>"),
    ("hex word stays", "a decade of facade", "a decade of facade"),
    ("digits only are a number", "pid 123456", "pid <n>"),
    ("host", "Could not resolve host: git.example.com", "Could not resolve host: <host>"),
    ("host with digits", "db-1.internal refused", "<host> refused"),
    ("host at a full stop", "lookup mirror.example.org.", "lookup <host>."),
    ("host with port", "git.example.com:443 closed", "<host>:<n> closed"),
    ("file names stay", "error in site.yml and setup.py", "error in site.yml and setup.py"),
    ("capitalised names stay", "yaml.scanner.ScannerError", "yaml.scanner.ScannerError"),
    ("quoted path", "cannot open '/srv/app/releases/42'", "cannot open <path>"),
    ("double-quoted path", 'read "/etc/app.conf": denied', "read <path>: denied"),
    ("quoted path with a space", "no '/srv/my app/x' here", "no <path> here"),
    ("quoted relative path", "missing 'templates/nginx.conf.j2'", "missing <path>"),
    (
        "quoted url",
        "fatal: unable to access 'https://git.example.com/a.git/'",
        "fatal: unable to access <path>",
    ),
    ("quoted word stays", "unknown option 'verbose'", "unknown option 'verbose'"),
    ("apostrophes stay", "can't open /x, it's gone", "can't open /x, it's gone"),
    ("whitespace collapsed", "  a \t b\n\nc  ", "a b c"),
    (
        "git down",
        "fatal: unable to access 'https://git.example.com/app.git/': Failed to connect to "
        "git.example.com port 443 after 2015 ms: Connection refused",
        "fatal: unable to access <path>: Failed to connect to <host> port <n> after <n> ms: "
        "Connection refused",
    ),
]


@pytest.mark.parametrize(
    ("message", "normalised"), [n[1:] for n in NORMALISED], ids=[n[0] for n in NORMALISED]
)
def test_normalise_message(message: str, normalised: str) -> None:
    assert normalise_message(message) == normalised


def test_only_the_scanned_prefix_counts() -> None:
    head = "x" * (MESSAGE_SCAN_LIMIT - 1)
    assert normalise_message(head + " tail one") == normalise_message(head + " tail two")
    assert normalise_message(head + " tail") == head


# --- the execution's signature ----------------------------------------------------------------


def failure(host: str, failure_class: str, message: str) -> HostFailure:
    return HostFailure(host, failure_class, message)


def test_signature_of_one_host() -> None:
    signature = failure_signature([failure("web1", "Task_Failed", "exit code 2")])
    digest = hashlib.sha256(b"task_failed\0exit code <n>").hexdigest()
    assert signature == Signature(digest[:16], "task_failed", "exit code <n>")


def test_the_most_common_signature_wins() -> None:
    signature = failure_signature(
        [
            failure("web1", "unreachable", "ssh: connect to host 10.0.0.1 port 22: timed out"),
            failure("web2", "task_failed", "exit code 1"),
            failure("web3", "task_failed", "exit code 2"),
        ]
    )
    assert signature is not None
    assert (signature.failure_class, signature.text) == ("task_failed", "exit code <n>")


def test_a_tie_goes_to_the_first_host() -> None:
    hosts = [failure("a", "task_failed", "boom"), failure("b", "unreachable", "gone")]
    first = failure_signature(hosts)
    assert first is not None and first.failure_class == "task_failed"
    second = failure_signature(hosts[::-1])
    assert second is not None and second.failure_class == "unreachable"


def test_a_host_listed_twice_counts_once() -> None:
    hosts = [
        failure("a", "task_failed", "boom"),
        failure("a", "task_failed", "boom"),
        failure("b", "unreachable", "gone"),
        failure("c", "unreachable", "gone"),
    ]
    signature = failure_signature(hosts)
    assert signature is not None and signature.failure_class == "unreachable"


def test_the_class_is_part_of_the_signature() -> None:
    one = failure_signature([failure("a", "task_failed", "boom")])
    two = failure_signature([failure("a", "async_failed", "boom")])
    assert one is not None and two is not None and one.key != two.key


def test_no_hosts_no_signature() -> None:
    assert failure_signature([]) is None


def test_same_failure_on_other_hosts_same_key() -> None:
    one = failure_signature([failure("a", "unreachable", "ssh: connect to 10.0.0.1 port 22")])
    two = failure_signature([failure("b", "unreachable", "ssh: connect to 10.9.8.7 port 2222")])
    assert one == two


# --- the per-signature breaker ----------------------------------------------------------------

BREAKER = SignatureBreaker(executions=3, jobs=2, window=minutes(10), cool_down=minutes(15))


def sightings(*spec: tuple[float, str, str]) -> tuple[Sighting, ...]:
    """(minutes ago, execution, job) triples."""
    return tuple(Sighting(NOW - minutes(ago), execution, job) for ago, execution, job in spec)


@pytest.mark.parametrize(
    ("spec", "is_open", "until_minutes", "counts"),
    [
        ((), False, None, (0, 0)),
        (((1, "e1", "j1"), (2, "e2", "j2")), False, None, (2, 2)),  # too few executions
        (((1, "e1", "j1"), (2, "e2", "j1"), (3, "e3", "j1")), False, None, (3, 1)),  # one job
        (((1, "e1", "j1"), (2, "e2", "j1"), (3, "e3", "j2")), True, 15, (3, 2)),
        # the same execution failing again is one execution
        (((1, "e1", "j1"), (2, "e1", "j1"), (3, "e2", "j2")), False, None, (2, 2)),
        # never all three within 10 minutes
        (((1, "e1", "j1"), (2, "e2", "j1"), (12, "e3", "j2")), False, None, (2, 1)),
        # all three within 10 minutes until a moment ago: open for the cool-down from then
        (((1, "e1", "j1"), (2, "e2", "j1"), (10, "e3", "j2")), True, 15, (3, 2)),
        # held until the oldest left the window 3 minutes ago: open 12 more minutes
        (((11, "e1", "j1"), (12, "e2", "j1"), (13, "e3", "j2")), True, 12, (3, 2)),
        # ... closed once the cool-down is over
        (((26, "e1", "j1"), (27, "e2", "j1"), (28, "e3", "j2")), False, None, (0, 0)),
        # sightings in the future are ignored
        (((-1, "e1", "j1"), (-2, "e2", "j1"), (-3, "e3", "j2")), False, None, (0, 0)),
        # held at 5..4 minutes ago (before e1 left): until 4 minutes ago + cool-down
        (((6, "x", "j1"), (5, "y", "j2"), (14, "e1", "j3")), True, 11, (3, 3)),
    ],
)
def test_signature_state(
    spec: tuple[tuple[float, str, str], ...],
    is_open: bool,
    until_minutes: float | None,
    counts: tuple[int, int],
) -> None:
    state = signature_state(BREAKER, sightings(*spec), NOW)
    assert state.open is is_open
    assert state.until == (None if until_minutes is None else NOW + minutes(until_minutes))
    assert (state.executions, state.jobs) == counts


def test_signature_breaker_closes_after_its_cool_down() -> None:
    spec = sightings((0, "e1", "j1"), (0, "e2", "j2"), (0, "e3", "j3"))
    assert signature_state(BREAKER, spec, NOW).until == NOW + minutes(15)
    # while the condition holds, it can close no earlier than a cool-down from now ...
    later = signature_state(BREAKER, spec, NOW + minutes(9))
    assert later.open and later.until == NOW + minutes(9) + minutes(15)
    # ... and once the sightings left the window (10 minutes on), a cool-down from then
    after = signature_state(BREAKER, spec, NOW + minutes(11))
    assert after.open and after.until == NOW + minutes(10) + minutes(15)
    assert signature_state(BREAKER, spec, NOW + minutes(25) - timedelta(seconds=1)).open
    assert not signature_state(BREAKER, spec, NOW + minutes(25)).open


def test_a_zero_cool_down_closes_as_soon_as_it_stops_holding() -> None:
    breaker = SignatureBreaker(executions=1, jobs=1, window=minutes(10), cool_down=timedelta(0))
    spec = sightings((0, "e1", "j1"))
    assert signature_state(breaker, spec, NOW).open
    assert signature_state(breaker, spec, NOW + minutes(9)).open
    assert not signature_state(breaker, spec, NOW + minutes(10)).open


def test_many_sightings_are_counted_quickly() -> None:
    spec = tuple(Sighting(NOW - timedelta(seconds=n), f"e{n}", f"j{n % 40}") for n in range(5000))
    state = signature_state(SignatureBreaker(), spec, NOW)
    assert state.open and (state.executions, state.jobs) == (600, 40)
