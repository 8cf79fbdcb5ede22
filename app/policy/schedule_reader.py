"""Reading the policy's `schedule:` section: blackout windows with their days, local times
and time zones, every problem with its line (a part of `app.policy.loader`'s parser)."""

from __future__ import annotations

import difflib
import functools
import re
from datetime import time
from typing import Final, TypeVar
from zoneinfo import ZoneInfo, available_timezones

import yaml

from app.policy.model import Blackout, Schedule
from app.policy.reader import INVALID, TAG_NULL, NodeReader, suggest

SCHEDULE_KEYS: Final = ("blackouts",)
BLACKOUT_KEYS: Final = ("name", "days", "from", "to", "tz")
DAYS: Final = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DEFAULT_TZ: Final = "UTC"
_CLOCK: Final = re.compile(r"(\d{1,2}):(\d\d)")
_WEEK_MINUTES: Final = 7 * 24 * 60
DAY_NAMES: Final = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")

T = TypeVar("T")


class ScheduleReader(NodeReader[T]):
    """`NodeReader` with the schedule section's readers."""

    def schedule(self, node: yaml.Node) -> Schedule:
        if self.is_null(node):
            return Schedule()
        hint = " such as {blackouts: [{name: nightly, from: '23:00', to: '06:00'}]}"
        entries = self.mapping(node, "schedule", SCHEDULE_KEYS, hint)
        if entries is None or "blackouts" not in entries:
            return Schedule()
        items = entries["blackouts"][1]
        if self.is_null(items):
            return Schedule()
        if not isinstance(items, yaml.SequenceNode):
            got = self.describe(items)
            self.error(
                items, f"schedule.blackouts must be a list of windows ('- name: ...'), got {got}"
            )
            return Schedule()
        names: dict[str, int] = {}
        blackouts: list[Blackout] = []
        for index, item in enumerate(items.value):
            blackout = self.blackout(item, f"schedule.blackouts[{index}]", names)
            if blackout is not None:
                blackouts.append(blackout)
        for tz in dict.fromkeys(b.tz for b in blackouts):
            if _covers_the_week([b for b in blackouts if b.tz == tz]):
                self.error(
                    items,
                    f"schedule.blackouts: the windows in {tz} cover the whole week, so no "
                    "restart could ever be due",
                )
        return Schedule(tuple(blackouts))

    def blackout(self, node: yaml.Node, path: str, names: dict[str, int]) -> Blackout | None:
        hint = " such as {name: nightly, from: '23:00', to: '06:00', tz: Europe/Berlin}"
        entries = self.mapping(node, path, BLACKOUT_KEYS, hint)
        if entries is None:
            return None
        name = None
        if "name" not in entries:
            self.error(node, f"{path}: every blackout needs a name")
        else:
            name = self.unique_name(entries["name"][1], f"{path}.name", "blackout", names)
        days = frozenset(range(7))
        if "days" in entries:
            days = self.days(entries["days"][1], f"{path}.days")
        start = end = None
        for key in ("from", "to"):
            if key not in entries:
                self.error(node, f"{path}: '{key}' is required, a local time like \"23:00\"")
        if "from" in entries:
            start = self.clock(entries["from"][1], f"{path}.from", end_of_day=False)
        if "to" in entries:
            end = self.clock(entries["to"][1], f"{path}.to", end_of_day=True)
        tz, zone = DEFAULT_TZ, None
        if "tz" in entries:
            tz_node = entries["tz"][1]
            text = self.text_value(tz_node, f"{path}.tz")
            zone = self.zone(tz_node, f"{path}.tz", text) if text is not None else None
            tz = text or tz
        else:
            zone = ZoneInfo(DEFAULT_TZ)
        if start is not None and start == end:
            self.error(
                entries["to"][1],
                f"{path}: from and to are both {start[0]:02}:{start[1]:02}, an empty window; "
                'for a whole day use from: "00:00", to: "24:00"',
            )
            return None
        if name is None or not days or start is None or end is None or zone is None:
            return None
        return Blackout(
            name=name,
            days=days,
            start=time(*start),
            end=None if end == (24, 0) else time(*end),
            tz=tz,
            zone=zone,
            line=node.start_mark.line + 1,
        )

    def days(self, node: yaml.Node, path: str) -> frozenset[int]:
        found: set[int] = set()
        for text, item in self.texts(node, path):
            key = text.strip().lower()
            if key in DAYS:
                found.add(DAYS.index(key))
            elif key in DAY_NAMES:
                found.add(DAY_NAMES.index(key))
            else:
                self.error(item, f"{path}: '{text}' is not a day{suggest(key, DAYS)}")
        return frozenset(found)

    def clock(self, node: yaml.Node, path: str, *, end_of_day: bool) -> tuple[int, int] | None:
        """A local time ``HH:MM`` as (hour, minute); ``24:00`` only for the end of a window.

        The scalar's own text is read: YAML 1.1 turns an unquoted 23:00 into the number 1380
        (base 60), and an unquoted 06:00 into text.
        """
        latest = '"24:00" for the end of the day' if end_of_day else '"23:59"'
        value = self.scalar(node)
        if value is INVALID or not isinstance(node, yaml.ScalarNode) or node.tag == TAG_NULL:
            got = self.describe(node)
            self.error(node, f'{path} must be a local time like "23:00", got {got}')
            return None
        text = str(node.value).strip()
        found = _CLOCK.fullmatch(text)
        if found is None:
            self.error(node, f'{path} must be a local time like "23:00", got {self.describe(node)}')
            return None
        hour, minute = int(found[1]), int(found[2])
        if (hour, minute) == (24, 0) and end_of_day:
            return hour, minute
        if hour > 23 or minute > 59:
            self.error(node, f'{path}: {text!r} is not a time of day; use "00:00" to {latest}')
            return None
        return hour, minute

    def zone(self, node: yaml.Node, path: str, name: str) -> ZoneInfo | None:
        try:
            return ZoneInfo(name)
        except (KeyError, ValueError, OSError):  # ZoneInfoNotFoundError is a KeyError
            pass
        known = _time_zones()
        by_case = {z.lower(): z for z in known}
        close = [by_case[name.lower()]] if name.lower() in by_case else []
        close = close or difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        self.error(
            node,
            f"{path}: unknown time zone '{name}'{hint}; use an IANA name such as Europe/Berlin, "
            "America/New_York or UTC",
        )
        return None


@functools.cache
def _time_zones() -> frozenset[str]:
    return frozenset(available_timezones())


def _covers_the_week(blackouts: list[Blackout]) -> bool:
    """Whether windows in one zone leave no minute of the local week outside them."""
    spans: list[tuple[int, int]] = []
    for blackout in blackouts:
        start = blackout.start.hour * 60 + blackout.start.minute
        end = 24 * 60 if blackout.end is None else blackout.end.hour * 60 + blackout.end.minute
        if end <= start:
            end += 24 * 60
        for day in blackout.days:
            low, high = day * 24 * 60 + start, day * 24 * 60 + end
            spans.append((low, min(high, _WEEK_MINUTES)))
            if high > _WEEK_MINUTES:
                spans.append((0, high - _WEEK_MINUTES))
    covered = 0
    for low, high in sorted(spans):
        if low > covered:
            return False
        covered = max(covered, high)
    return covered >= _WEEK_MINUTES
