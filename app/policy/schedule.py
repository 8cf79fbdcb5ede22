"""Blackout windows: local wall-clock times in a time zone, across midnight and DST changes.

Pure: the caller passes the moment to look at.
"""

from __future__ import annotations

from datetime import datetime

from app.policy.model import ActiveBlackout, Schedule


def blackout_at(schedule: Schedule, at: datetime) -> ActiveBlackout | None:
    """The blackout covering ``at`` (aware), followed through touching or overlapping windows
    to the first moment outside all of them; None when ``at`` is outside every window."""
    raise NotImplementedError
