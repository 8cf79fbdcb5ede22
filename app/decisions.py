"""Deciding on failed runs: the bridge between the stored record and the pure policy."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from sqlalchemy.orm import Session

from app.models import Execution


def decide_failed_runs(session: Session, executions: Iterable[Execution], now: dt.datetime) -> int:
    """Decide each failed run that has no decision yet; return how many restarts were queued."""
    return 0
