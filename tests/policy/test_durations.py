from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.policy import format_duration, parse_duration
from app.policy.durations import format_seconds


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (0, 0),
        (90, 90),
        ("90", 90),
        ("0s", 0),
        ("30s", 30),
        ("10m", 600),
        ("6h", 21600),
        ("2d", 172800),
        ("1h30m", 5400),
        ("1h 30m", 5400),
        ("1d2h3m4s", 93784),
        ("2h0m", 7200),
        ("90m", 5400),
        ("365d", 365 * 86400),
    ],
)
def test_parse_duration_accepts(value: object, seconds: int) -> None:
    assert parse_duration(value) == timedelta(seconds=seconds)


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("", "is not a duration"),
        ("10x", "is not a duration"),
        ("m", "is not a duration"),
        ("10M", "is not a duration"),
        ("1.5h", "is not a duration"),
        ("30m1h", "is not a duration"),
        ("-5s", "is not a duration"),
        (-5, "must not be negative"),
        (1.5, "fractions of a second"),
        (True, "is not a duration"),
        (None, "is not a duration"),
        ([1], "is not a duration"),
        ("366d", "longest accepted duration"),
        (10**9, "longest accepted duration"),
    ],
)
def test_parse_duration_rejects(value: object, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        parse_duration(value)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (30, "30s"), (600, "10m"), (5400, "1h30m"), (93784, "1d2h3m4s"), (86400, "1d")],
)
def test_format_duration(seconds: int, text: str) -> None:
    assert format_duration(timedelta(seconds=seconds)) == text


@given(st.integers(min_value=0, max_value=365 * 86400))
def test_format_then_parse_is_identity(seconds: int) -> None:
    value = timedelta(seconds=seconds)
    assert parse_duration(format_duration(value)) == value


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.0, "0 s"),
        (2.5, "2.5 s"),
        (60.0, "60 s"),
        (119.4, "119 s"),
        (120.0, "2 min"),
        (123.0, "2 min 3 s"),
        (3600.0, "60 min"),
        (7200.0, "2 h"),
        (7500.0, "2 h 5 min"),
    ],
)
def test_format_seconds(seconds: float, text: str) -> None:
    assert format_seconds(seconds) == text
