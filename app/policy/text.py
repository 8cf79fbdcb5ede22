"""How the engine words its reasons: times, counts, quoted names and patterns."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Final

from app.policy.model import Rule
from app.policy.patterns import Glob

MAX_LISTED: Final = 5
"""Hosts and misses named in one sentence before "and N more"."""


def by_rule(rule: Rule | None) -> str:
    return f"rule {rule.name}" if rule is not None else "the defaults"


def at_time(moment: datetime, now: datetime) -> str:
    moment = moment.astimezone(UTC)
    if moment.date() == now.astimezone(UTC).date():
        return moment.strftime("%H:%M:%S UTC")
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def full_time(moment: datetime) -> str:
    """A moment with its date, for output read later than it was decided."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def plural(count: int) -> str:
    return "" if count == 1 else "s"


def percent(share: float) -> str:
    """``0.6`` → ``60%``, ``1/3`` → ``33.3%``."""
    return f"{round(share * 100, 1):g}%"


def quote(text: str, limit: int = 40) -> str:
    return repr(text if len(text) <= limit else text[: limit - 1] + "…")


def glob_list(globs: tuple[Glob, ...]) -> str:
    return " or ".join(repr(g.pattern) for g in globs)


def name_list(names: Sequence[str]) -> str:
    shown = ", ".join(names[:MAX_LISTED])
    return shown + (f" and {len(names) - MAX_LISTED} more" if len(names) > MAX_LISTED else "")
