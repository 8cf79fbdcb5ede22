"""Blackout windows: `blackout_at` across midnight, weekdays and DST changes, and the engine's
blackout gate."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from app.policy import ActiveBlackout, Schedule, blackout_at, decide_restart, explain_decision
from app.policy.schedule import LONGEST_CHAIN

from .helpers import host, make_input, policy

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
LORD_HOWE = ZoneInfo("Australia/Lord_Howe")


def schedule(windows: str) -> Schedule:
    """A schedule from blackout lines (flow mappings), each on its own list item."""
    items = "".join(f"    - {w}\n" for w in windows.strip().splitlines())
    return policy("schedule:\n  blackouts:\n" + items).schedule


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def local(zone: ZoneInfo, *args: int, fold: int = 0) -> datetime:
    return datetime(*args, tzinfo=zone, fold=fold)


NIGHTLY = "{name: nightly, from: '23:00', to: '06:00', tz: Europe/Berlin}"

# 2024: Wednesday 1 May; Berlin springs forward on Sunday 31 March (02:00 CET -> 03:00 CEST,
# 01:00 UTC) and falls back on Sunday 27 October (03:00 CEST -> 02:00 CET, 01:00 UTC).
BLACKOUT_AT: list[tuple[str, str, datetime, tuple[str, datetime] | None]] = [
    ("outside", NIGHTLY, local(BERLIN, 2024, 5, 1, 12, 0), None),
    (
        "inside, before midnight",
        NIGHTLY,
        local(BERLIN, 2024, 5, 1, 23, 55),
        ("nightly", utc(2024, 5, 2, 4, 0)),
    ),
    (
        "inside, after midnight",
        NIGHTLY,
        local(BERLIN, 2024, 5, 2, 5, 59),
        ("nightly", utc(2024, 5, 2, 4, 0)),
    ),
    ("at the start", NIGHTLY, local(BERLIN, 2024, 5, 1, 23, 0), ("nightly", utc(2024, 5, 2, 4, 0))),
    ("at the end is outside", NIGHTLY, local(BERLIN, 2024, 5, 2, 6, 0), None),
    ("just before the start", NIGHTLY, local(BERLIN, 2024, 5, 1, 22, 59, 59), None),
    # the nights the clocks change: a 6-hour and an 8-hour night
    (
        "spring night",
        NIGHTLY,
        local(BERLIN, 2024, 3, 30, 23, 55),
        ("nightly", utc(2024, 3, 31, 4, 0)),
    ),
    (
        "autumn night",
        NIGHTLY,
        local(BERLIN, 2024, 10, 26, 23, 55),
        ("nightly", utc(2024, 10, 27, 5, 0)),
    ),
    (
        "autumn night, second 02:30",
        NIGHTLY,
        local(BERLIN, 2024, 10, 27, 2, 30, fold=1),
        ("nightly", utc(2024, 10, 27, 5, 0)),
    ),
    # a window whose start the clock skips starts at the jump
    (
        "from in the spring gap",
        "{name: g, from: '02:30', to: '04:00', tz: Europe/Berlin}",
        utc(2024, 3, 31, 1, 0),
        ("g", utc(2024, 3, 31, 2, 0)),
    ),
    (
        "before the spring gap",
        "{name: g, from: '02:30', to: '04:00', tz: Europe/Berlin}",
        utc(2024, 3, 31, 0, 59, 59),
        None,
    ),
    # ... and one wholly inside the gap does not happen that night
    (
        "window inside the spring gap",
        "{name: g, from: '02:10', to: '02:50', tz: Europe/Berlin}",
        utc(2024, 3, 31, 1, 0),
        None,
    ),
    (
        "same window a day later",
        "{name: g, from: '02:10', to: '02:50', tz: Europe/Berlin}",
        utc(2024, 4, 1, 0, 10),
        ("g", utc(2024, 4, 1, 0, 50)),
    ),
    # a window ending in the gap ends at the jump
    (
        "to in the spring gap",
        "{name: g, from: '01:00', to: '02:30', tz: Europe/Berlin}",
        utc(2024, 3, 31, 0, 30),
        ("g", utc(2024, 3, 31, 1, 0)),
    ),
    # times that happen twice: from at the first, to at the second occurrence
    (
        "from twice, first",
        "{name: t, from: '02:30', to: '02:45', tz: Europe/Berlin}",
        utc(2024, 10, 27, 0, 30),
        ("t", utc(2024, 10, 27, 1, 45)),
    ),
    (
        "from twice, between",
        "{name: t, from: '02:30', to: '02:45', tz: Europe/Berlin}",
        utc(2024, 10, 27, 1, 10),
        ("t", utc(2024, 10, 27, 1, 45)),
    ),
    (
        "from twice, before",
        "{name: t, from: '02:30', to: '02:45', tz: Europe/Berlin}",
        utc(2024, 10, 27, 0, 29),
        None,
    ),
    (
        "to twice, after",
        "{name: t, from: '02:30', to: '02:45', tz: Europe/Berlin}",
        utc(2024, 10, 27, 1, 45),
        None,
    ),
    # New York, and Lord Howe's half-hour DST
    (
        "new york spring",
        "{name: ny, from: '01:30', to: '03:30', tz: America/New_York}",
        local(NEW_YORK, 2024, 3, 10, 1, 45),
        ("ny", utc(2024, 3, 10, 7, 30)),
    ),
    (
        "new york autumn",
        "{name: ny, from: '01:30', to: '03:30', tz: America/New_York}",
        local(NEW_YORK, 2024, 11, 3, 1, 45),
        ("ny", utc(2024, 11, 3, 8, 30)),
    ),
    (
        "lord howe gap",
        "{name: lh, from: '02:10', to: '03:00', tz: Australia/Lord_Howe}",
        utc(2024, 10, 5, 15, 30),
        ("lh", utc(2024, 10, 5, 16, 0)),
    ),
    (
        "lord howe twice",
        "{name: lh, from: '01:40', to: '01:50', tz: Australia/Lord_Howe}",
        local(LORD_HOWE, 2024, 4, 7, 1, 45, fold=1),
        ("lh", utc(2024, 4, 6, 15, 20)),
    ),
    # weekdays: the day is the day the window starts
    (
        "friday night into saturday",
        "{name: f, days: [fri], from: '22:00', to: '02:00'}",
        utc(2024, 5, 4, 1, 0),
        ("f", utc(2024, 5, 4, 2, 0)),
    ),
    (
        "saturday night is not friday's",
        "{name: f, days: [fri], from: '22:00', to: '02:00'}",
        utc(2024, 5, 4, 23, 0),
        None,
    ),
    (
        "sunday into monday",
        "{name: s, days: [sun], from: '23:00', to: '01:00'}",
        utc(2024, 5, 6, 0, 30),
        ("s", utc(2024, 5, 6, 1, 0)),
    ),
    (
        "to 24:00",
        "{name: m, days: [wed], from: '20:00', to: '24:00'}",
        utc(2024, 5, 1, 23, 59),
        ("m", utc(2024, 5, 2, 0, 0)),
    ),
    # touching and overlapping windows are followed to the end of the last
    (
        "touching",
        "{name: a, days: [sat], from: '00:00', to: '24:00'}\n"
        "{name: b, days: [sun], from: '00:00', to: '06:00'}",
        utc(2024, 5, 4, 12, 0),
        ("a", utc(2024, 5, 5, 6, 0)),
    ),
    (
        "overlapping in two zones",
        "{name: a, from: '01:00', to: '03:00'}\n"
        "{name: b, from: '04:30', to: '08:00', tz: Europe/Berlin}",
        utc(2024, 5, 1, 2, 0),
        ("a", utc(2024, 5, 1, 6, 0)),
    ),
    (
        "a gap between is not followed",
        "{name: a, from: '01:00', to: '03:00'}\n{name: b, from: '03:01', to: '08:00'}",
        utc(2024, 5, 1, 2, 0),
        ("a", utc(2024, 5, 1, 3, 0)),
    ),
    (
        "the first listed names a moment inside two",
        "{name: a, from: '01:00', to: '03:00'}\n{name: b, from: '00:00', to: '05:00'}",
        utc(2024, 5, 1, 2, 0),
        ("a", utc(2024, 5, 1, 5, 0)),
    ),
    (
        "a weekend",
        "{name: weekend, days: [fri], from: '18:00', to: '24:00'}\n"
        "{name: sat, days: [sat, sun], from: '00:00', to: '24:00'}\n"
        "{name: mon, days: [mon], from: '00:00', to: '07:00'}",
        utc(2024, 5, 3, 20, 0),
        ("weekend", utc(2024, 5, 6, 7, 0)),
    ),
]


@pytest.mark.parametrize(
    ("windows", "at", "expected"), [b[1:] for b in BLACKOUT_AT], ids=[b[0] for b in BLACKOUT_AT]
)
def test_blackout_at(windows: str, at: datetime, expected: tuple[str, datetime] | None) -> None:
    found = blackout_at(schedule(windows), at)
    assert found == (None if expected is None else ActiveBlackout(*expected))
    if found is not None:
        assert found.ends_at.tzinfo == UTC


def test_no_schedule_no_blackout() -> None:
    assert blackout_at(Schedule(), utc(2024, 5, 1)) is None


def test_windows_covering_every_moment_are_followed_only_so_far() -> None:
    """One zone's windows covering the week are refused at load; two zones can still cover
    every moment together (UTC 00:00-13:00 and Tokyo 21:00-10:00, UTC 12:00-01:00)."""
    both = schedule(
        "{name: a, from: '00:00', to: '13:00'}\n"
        "{name: b, from: '21:00', to: '10:00', tz: Asia/Tokyo}"
    )
    at = utc(2024, 5, 1, 5, 0)
    found = blackout_at(both, at)
    assert found is not None and found.name == "a"
    assert LONGEST_CHAIN <= found.ends_at - at < LONGEST_CHAIN + timedelta(days=1)


# --- the engine's blackout gate ---------------------------------------------------------------

NIGHTLY_POLICY = (
    "defaults:\n"
    "  backoff: {jitter: 0}\n"
    "  deadline: 12h\n"
    "schedule:\n"
    "  blackouts:\n"
    "    - name: nightly-backup\n"
    "      from: 23:00\n"
    "      to: 06:00\n"
    "      tz: Europe/Berlin\n"
)


@pytest.mark.parametrize(
    ("failed_at", "due_at"),
    [
        # an ordinary night: 23:55 CEST is 21:55 UTC, 06:00 CEST is 04:00 UTC
        (utc(2024, 5, 1, 21, 55), utc(2024, 5, 2, 4, 0)),
        # spring forward: 23:55 CET is 22:55 UTC; 06:00 is already CEST, 04:00 UTC
        (utc(2024, 3, 30, 22, 55), utc(2024, 3, 31, 4, 0)),
        # fall back: 23:55 CEST is 21:55 UTC; 06:00 is already CET, 05:00 UTC
        (utc(2024, 10, 26, 21, 55), utc(2024, 10, 27, 5, 0)),
    ],
    ids=["may", "last sunday of march", "last sunday of october"],
)
def test_a_restart_due_in_a_blackout_waits_for_its_end(
    failed_at: datetime, due_at: datetime
) -> None:
    decision = decide_restart(policy(NIGHTLY_POLICY), make_input(now=failed_at))
    assert (decision.action, decision.reason_code) == ("restart", "restart")
    assert decision.due_at == due_at
    assert decision.due_at.astimezone(BERLIN).strftime("%H:%M") == "06:00"
    assert decision.deferred_by == "nightly-backup"
    assert decision.backoff_seconds == 30
    assert decision.reason == (
        f"restart 1 of 1 host deferred until {due_at:%Y-%m-%d %H:%M:%S} UTC "
        "(blackout nightly-backup) by the defaults (attempt 1 of 3, backoff 30 s)"
    )


def test_a_restart_due_outside_is_not_moved() -> None:
    now = utc(2024, 5, 1, 10, 0)
    decision = decide_restart(policy(NIGHTLY_POLICY), make_input(now=now))
    assert decision.due_at == now + timedelta(seconds=30)
    assert decision.deferred_by is None


def test_the_backoff_can_carry_a_restart_into_a_blackout() -> None:
    body = NIGHTLY_POLICY.replace("{jitter: 0}", "{jitter: 0, initial: 10m}")
    decision = decide_restart(policy(body), make_input(now=utc(2024, 5, 1, 20, 55)))
    assert decision.due_at == utc(2024, 5, 2, 4, 0)
    assert decision.deferred_by == "nightly-backup"


def test_the_autumn_night_passes_a_six_hour_deadline_the_spring_night_does_not() -> None:
    body = NIGHTLY_POLICY.replace("  deadline: 12h\n", "")
    spring = decide_restart(policy(body), make_input(now=utc(2024, 3, 30, 22, 55)))
    assert (spring.action, spring.due_at) == ("restart", utc(2024, 3, 31, 4, 0))
    autumn = decide_restart(policy(body), make_input(now=utc(2024, 10, 26, 21, 55)))
    assert (autumn.action, autumn.reason_code) == ("skip", "blackout")
    assert autumn.reason == (
        "skip: blackout nightly-backup lasts until 2024-10-27 05:00:00 UTC, past the deadline "
        "6h after the first failure (2024-10-27 03:55:00 UTC)"
    )
    assert autumn.due_at is None and autumn.deferred_by is None


def test_the_deadline_counts_from_the_first_failure() -> None:
    now = utc(2024, 5, 1, 21, 55)
    inp = make_input(now=now, first_failure_at=now - timedelta(hours=7))
    decision = decide_restart(policy(NIGHTLY_POLICY), inp)
    assert decision.reason_code == "blackout"
    assert decision.reason.endswith(
        "past the deadline 12h after the first failure (2024-05-02 02:55:00 UTC)"
    )


def test_no_deadline_waits_however_long() -> None:
    body = NIGHTLY_POLICY.replace("deadline: 12h", "deadline: null")
    decision = decide_restart(policy(body), make_input(now=utc(2024, 5, 1, 21, 55)))
    assert decision.due_at == utc(2024, 5, 2, 4, 0)
    check = next(
        c
        for c in explain_decision(policy(body), make_input(now=utc(2024, 5, 1, 21, 55))).checks
        if c.code == "blackout"
    )
    assert check.detail.endswith("(06:00 Europe/Berlin): deferred (no deadline)")


def test_a_rule_can_ignore_blackouts() -> None:
    body = NIGHTLY_POLICY + (
        "rules:\n  - name: emergency\n    when: {job: 'hotfix-*'}\n    ignore_blackouts: true\n"
    )
    now = utc(2024, 5, 1, 21, 55)
    urgent = decide_restart(policy(body), make_input(now=now, job_id="hotfix-1"))
    assert (urgent.rule, urgent.due_at, urgent.deferred_by) == (
        "emergency",
        now + timedelta(seconds=30),
        None,
    )
    other = decide_restart(policy(body), make_input(now=now))
    assert other.deferred_by == "nightly-backup"


def test_a_blackout_does_not_change_the_hosts() -> None:
    hosts = (host("web1"), host("web2"))
    decision = decide_restart(
        policy(NIGHTLY_POLICY), make_input(now=utc(2024, 5, 1, 21, 55), hosts=hosts)
    )
    assert decision.hosts == ("web1", "web2")
