"""The execution page's timeline: one bar per run on a shared time axis, restarts marked."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from app.models import ExecutionRun, Restart
from app.runner.documents import FINAL_STATUSES
from app.web.admin.format import human_duration


@dataclass(frozen=True)
class TimelineBar:
    run_index: int
    status: str
    started_at: dt.datetime | None
    ended_at: dt.datetime | None
    seconds: float | None
    ongoing: bool
    derived: bool
    """Some of its times come from status events only, not from the Runner's timers."""
    x: float = 0.0
    width: float = 0.0
    """Position and width in percent of the drawing."""

    @property
    def number(self) -> int:
        return self.run_index + 1

    @property
    def label(self) -> str:
        if self.started_at is None:
            return f"Run {self.number} · {self.status.lower()} · not started"
        if self.ongoing:
            so_far = human_duration(self.seconds)
            return f"Run {self.number} · {self.status.lower()} · {so_far} so far"
        if self.ended_at is None:
            return f"Run {self.number} · {self.status.lower()} · end not known"
        return f"Run {self.number} · {self.status.lower()} · {human_duration(self.seconds)}"

    @property
    def label_at_end(self) -> bool:
        """Labels of bars in the right part of the drawing are anchored at their end."""
        return self.x > 55


@dataclass(frozen=True)
class TimelineMark:
    at: dt.datetime
    x: float
    label: str


@dataclass(frozen=True)
class Timeline:
    bars: list[TimelineBar]
    marks: list[TimelineMark]
    start: dt.datetime | None
    end: dt.datetime | None

    @property
    def drawn(self) -> list[TimelineBar]:
        return [b for b in self.bars if b.started_at is not None]

    @property
    def span(self) -> str:
        if self.start is None or self.end is None:
            return "—"
        return human_duration((self.end - self.start).total_seconds())


MIN_BAR_PERCENT = 1.0


def build_timeline(
    runs: Sequence[ExecutionRun], restarts: Sequence[Restart], current_run: int, now: dt.datetime
) -> Timeline:
    """One bar per run on a shared time axis; a run still going extends to now."""
    bars: list[TimelineBar] = []
    for run in runs:
        ongoing = (
            run.started_at is not None
            and run.ended_at is None
            and run.status not in FINAL_STATUSES
            and run.run_index == current_run
        )
        end = now if ongoing else run.ended_at
        seconds = (end - run.started_at).total_seconds() if run.started_at and end else None
        bars.append(
            TimelineBar(
                run_index=run.run_index,
                status=run.status,
                started_at=run.started_at,
                ended_at=run.ended_at,
                seconds=seconds,
                ongoing=ongoing,
                derived=run.start_derived or run.end_derived,
            )
        )
    sent = [(r.sent_at, r) for r in restarts if r.sent_at is not None]
    moments: list[dt.datetime] = [m for b in bars for m in (b.started_at, b.ended_at) if m]
    moments += [now for b in bars if b.ongoing]
    moments += [at for at, _ in sent]
    if not moments:
        return Timeline(bars, [], None, None)
    start, end = min(moments), max(moments)
    span = max((end - start).total_seconds(), 1.0)

    def pos(moment: dt.datetime) -> float:
        return round(100 * (moment - start).total_seconds() / span, 3)

    placed = []
    for bar in bars:
        if bar.started_at is None:
            placed.append(bar)
            continue
        x = pos(bar.started_at)
        bar_end = now if bar.ongoing else (bar.ended_at or bar.started_at)
        width = max(pos(bar_end) - x, MIN_BAR_PERCENT)
        x = min(x, 100 - width)
        placed.append(_with_geometry(bar, x, width))
    marks = [
        TimelineMark(at, pos(at), f"restart {'(manual) ' if r.manual else ''}sent")
        for at, r in sent
    ]
    return Timeline(placed, marks, start, end)


def _with_geometry(bar: TimelineBar, x: float, width: float) -> TimelineBar:
    return TimelineBar(
        bar.run_index,
        bar.status,
        bar.started_at,
        bar.ended_at,
        bar.seconds,
        bar.ongoing,
        bar.derived,
        x,
        width,
    )
