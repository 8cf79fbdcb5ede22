"""Durations as operators write them in the policy file: ``30s``, ``10m``, ``6h``, ``1h30m``."""

from __future__ import annotations

import re
from datetime import timedelta

MAX_DURATION = timedelta(days=365)
"""Longest duration the policy accepts; keeps ``now + duration`` far from datetime's limits."""

_DURATION = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")
_HINT = (
    "use whole seconds or numbers with units in the order d, h, m, s, like 30s, 10m, 6h, 2d, 1h30m"
)


def parse_duration(value: object) -> timedelta:
    """Turn ``90``, ``"90"``, ``"1h30m"`` ... into a timedelta; ValueError says what is wrong."""
    if isinstance(value, bool):
        raise ValueError(f"{_show(value)} is not a duration: {_HINT}")
    if isinstance(value, int):
        seconds = value
    elif isinstance(value, str):
        text = value.replace(" ", "")
        if text.isdigit():
            seconds = int(text)
        else:
            found = _DURATION.fullmatch(text)
            if text == "" or found is None:
                raise ValueError(f"{_show(value)} is not a duration: {_HINT}")
            days, hours, minutes, secs = (int(part) if part else 0 for part in found.groups())
            seconds = ((days * 24 + hours) * 60 + minutes) * 60 + secs
    elif isinstance(value, float):
        raise ValueError(
            f"{_show(value)} is not a duration: fractions of a second are not supported; {_HINT}"
        )
    else:
        raise ValueError(f"{_show(value)} is not a duration: {_HINT}")
    if seconds < 0:
        raise ValueError(f"{_show(value)} is not a duration: it must not be negative")
    if seconds > MAX_DURATION.total_seconds():
        raise ValueError(f"{_show(value)} is longer than the longest accepted duration, 365d")
    return timedelta(seconds=seconds)


def format_duration(value: timedelta) -> str:
    """The policy-file spelling of a duration: ``timedelta(seconds=5400)`` → ``"1h30m"``."""
    total = int(value.total_seconds())
    if total == 0:
        return "0s"
    sign = "-" if total < 0 else ""
    total = abs(total)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    units = ((days, "d"), (hours, "h"), (minutes, "m"), (seconds, "s"))
    parts = [f"{n}{unit}" for n, unit in units if n]
    return sign + "".join(parts)


def format_seconds(seconds: float) -> str:
    """A duration for people: ``850 ms``, ``2.5 s``, ``60 s``, ``5 min 30 s``, ``2 h 5 min``,
    ``3 d 4 h``."""
    if 0 < seconds < 1:
        return f"{round(seconds * 1000)} ms"
    if seconds < 10 and seconds != int(seconds):
        return f"{seconds:.1f} s"
    whole = round(seconds)
    if whole < 120:
        return f"{whole} s"
    if whole < 7200:
        minutes, secs = divmod(whole, 60)
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    if whole < 2 * 86400:
        hours, rest = divmod(whole, 3600)
        minutes = rest // 60
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, rest = divmod(whole, 86400)
    hours = rest // 3600
    return f"{days} d {hours} h" if hours else f"{days} d"


def _show(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value)
    return str(value)
