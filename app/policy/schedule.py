"""Blackout windows: local wall-clock times in a time zone, across midnight and DST changes.

Pure: the caller passes the moment to look at.

A window on local date d runs from ``start`` on d to ``end`` on d (or on d + 1 when it spans
midnight), turned into UTC instants with these rules for the nights the clocks change:

- a local time that happens twice (clocks go back) counts at its **first** occurrence for
  ``from`` and at its **second** for ``to``, so the window covers both;
- a local time the clock skips (clocks go forward) counts as the moment of the jump.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Final
from zoneinfo import ZoneInfo

from app.policy.model import ActiveBlackout, Blackout, Schedule

LONGEST_CHAIN: Final = timedelta(days=35)
"""Touching windows are followed at most this far. Windows in one zone that leave no gap in
the week are refused by the loader; only windows in several zones could together cover every
moment for weeks, and then ``ends_at`` is where the following stopped."""

_DAY: Final = timedelta(days=1)
_MARGIN: Final = timedelta(days=2)
"""A window starts on its local date and ends by the end of the next: windows covering a
moment start at most two days before it, in any zone."""


@dataclass(frozen=True, slots=True)
class Window:
    """One occurrence of a blackout, as UTC instants: [start, end)."""

    start: datetime
    end: datetime
    order: int
    """The blackout's position in the file (the first listed names a moment in several)."""
    name: str


def blackout_at(schedule: Schedule, at: datetime) -> ActiveBlackout | None:
    """The blackout covering ``at`` (aware), followed through touching or overlapping windows
    to the first moment outside all of them; None when ``at`` is outside every window."""
    if not schedule.blackouts:
        return None
    at = at.astimezone(UTC)
    low, high = at - _MARGIN, at + _MARGIN
    windows = list(windows_between(schedule, low, high))
    covering = [w for w in windows if w.start <= at < w.end]
    if not covering:
        return None
    name = min(covering, key=lambda w: w.order).name
    end = max(w.end for w in covering)
    while end - at < LONGEST_CHAIN:
        if end + _MARGIN > high:
            low, high = end - _MARGIN, end + 4 * _MARGIN
            windows = list(windows_between(schedule, low, high))
        later = max((w.end for w in windows if w.start <= end < w.end), default=None)
        if later is None:
            break
        end = later
    return ActiveBlackout(name, end)


def windows_between(schedule: Schedule, low: datetime, high: datetime) -> Iterator[Window]:
    """Every window of the schedule that starts on a local date from the day before ``low``'s
    to the day after ``high``'s (in its zone): all windows that overlap [low, high]."""
    for order, blackout in enumerate(schedule.blackouts):
        zone = blackout.zone
        day = low.astimezone(zone).date() - _DAY
        last = high.astimezone(zone).date() + _DAY
        while day <= last:
            if day.weekday() in blackout.days:
                window = window_on(blackout, day, order)
                if window is not None:
                    yield window
            day += _DAY


def window_on(blackout: Blackout, day: date, order: int = 0) -> Window | None:
    """The blackout's window starting on local date ``day`` (whatever its ``days``), or None
    when the clock skips all of it (both ends inside one DST jump)."""
    zone = blackout.zone
    start = local_instant(day, blackout.start, zone, first=True)
    if blackout.end is None:
        end = local_instant(day + _DAY, time(0, 0), zone, first=False)
    elif blackout.end > blackout.start:
        end = local_instant(day, blackout.end, zone, first=False)
    else:
        end = local_instant(day + _DAY, blackout.end, zone, first=False)
    if end <= start:
        return None
    return Window(start, end, order, blackout.name)


def local_instant(day: date, wall: time, zone: ZoneInfo, *, first: bool) -> datetime:
    """The UTC instant of a local wall-clock time: its first or second occurrence when the
    clocks go back, the moment of the jump when they skip it."""
    naive = datetime.combine(day, wall)
    earlier = naive.replace(tzinfo=zone, fold=0).astimezone(UTC)
    later = naive.replace(tzinfo=zone, fold=1).astimezone(UTC)
    if earlier == later:
        return earlier
    if earlier < later:  # it happens twice: fold 0 is the first occurrence
        return earlier if first else later
    # Skipped: fold 0 reads it with the offset before the jump (an instant after the jump),
    # fold 1 with the offset after (an instant before it). The jump lies between.
    return _jump_between(later, earlier, zone)


def _jump_between(before: datetime, after: datetime, zone: ZoneInfo) -> datetime:
    """The first instant in (before, after] whose UTC offset in ``zone`` is that of ``after``
    (zone offsets change on whole seconds)."""
    target = after.astimezone(zone).utcoffset()
    low, high = 0, int((after - before).total_seconds())
    while low + 1 < high:
        middle = (low + high) // 2
        if (before + timedelta(seconds=middle)).astimezone(zone).utcoffset() == target:
            high = middle
        else:
            low = middle
    return before + timedelta(seconds=high)


def wall_time(moment: datetime, zone: ZoneInfo) -> str:
    """``HH:MM`` of a moment in a zone, for sentences."""
    return moment.astimezone(zone).strftime("%H:%M")
