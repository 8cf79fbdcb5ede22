"""Reading restart insights: the counters of a page of signatures, never the whole history.

Every query here reads `insight_counts` rows of the signatures asked for (or ranks signatures
by their per-day `all` rows), plus a few indexed lookups per signature (examples, the rule
that last decided it); the cost follows the number of signatures shown and days covered.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.core.insights import ALL, ALL_TIME, ATTEMPT, COUNTERS, HOST, JOB, WAIT
from app.models import Decision, Execution, FailureSignature, InsightCount

TOP_ITEMS = 5
"""Jobs and hosts shown per signature."""
EXAMPLES = 3
MAX_RUNS_READ = 4
"""Decisions read per example wanted (an execution decided on several runs shows once)."""


@dataclass
class Tally:
    failures: int = 0
    restarts: int = 0
    hosts: int = 0
    settled: int = 0
    recovered: int = 0
    host_succeeded: int = 0
    host_failed_same: int = 0
    host_failed_other: int = 0
    recovery_seconds: float = 0.0

    def add(self, row: Any) -> None:
        """Add a row's counters (an `InsightCount`, or a row of sums labelled alike)."""
        for name in COUNTERS:
            setattr(self, name, getattr(self, name) + (getattr(row, name) or 0))

    @property
    def never_finished(self) -> int:
        """Hosts restarted whose run has not ended (yet)."""
        judged = self.host_succeeded + self.host_failed_same + self.host_failed_other
        return max(self.hosts - judged, 0)

    @property
    def rate(self) -> float | None:
        return self.recovered / self.settled if self.settled else None

    @property
    def mean_recovery(self) -> dt.timedelta | None:
        if not self.recovered:
            return None
        return dt.timedelta(seconds=self.recovery_seconds / self.recovered)


@dataclass(frozen=True)
class Example:
    execution_id: str
    at: dt.datetime


@dataclass
class SignatureStats:
    key: str
    failure_class: str
    text: str
    total: Tally = field(default_factory=Tally)
    by_attempt: dict[int, Tally] = field(default_factory=dict)
    by_wait: dict[int, Tally] = field(default_factory=dict)
    by_day: dict[dt.date, Tally] = field(default_factory=dict)
    jobs: list[tuple[str, Tally]] = field(default_factory=list)
    job_count: int = 0
    hosts: list[tuple[str, Tally]] = field(default_factory=list)
    host_count: int = 0
    examples: list[Example] = field(default_factory=list)
    rule: str | None = None
    """The rule that decided this signature's latest failure."""


def rank_signatures(
    session: Session, since: dt.date, limit: int, offset: int = 0
) -> tuple[list[str], int]:
    """Signatures with failures since the day, busiest first, and how many there are."""
    recent = (InsightCount.scope == ALL, InsightCount.day >= since)
    total = session.scalar(select(func.count(func.distinct(InsightCount.signature))).where(*recent))
    failures = func.sum(InsightCount.failures)
    keys = session.scalars(
        select(InsightCount.signature)
        .where(*recent)
        .group_by(InsightCount.signature)
        .order_by(failures.desc(), func.sum(InsightCount.restarts).desc(), InsightCount.signature)
        .limit(limit)
        .offset(offset)
    )
    return list(keys), total or 0


def signature_stats(
    session: Session, keys: Sequence[str], since: dt.date, detail: bool = False
) -> list[SignatureStats]:
    """The counters of these signatures since the day, in the order given. With `detail`,
    their top jobs and hosts (whole history), example executions and latest rule too."""
    if not keys:
        return []
    known = {
        row.key: row
        for row in session.scalars(select(FailureSignature).where(FailureSignature.key.in_(keys)))
    }
    stats = {
        key: SignatureStats(
            key,
            known[key].failure_class if key in known else "unknown",
            known[key].text if key in known else "",
        )
        for key in keys
    }
    sums = [func.sum(InsightCount.__table__.c[name]).label(name) for name in COUNTERS]
    recent = (InsightCount.signature.in_(keys), InsightCount.day >= since)
    # Summed in the database: one row per signature and day, attempt or wait.
    daily = session.execute(
        select(InsightCount.signature, InsightCount.day, *sums)
        .where(InsightCount.scope == ALL, *recent)
        .group_by(InsightCount.signature, InsightCount.day)
    )
    for row in daily:
        item = stats[row.signature]
        item.total.add(row)
        item.by_day.setdefault(row.day, Tally()).add(row)
    split = session.execute(
        select(InsightCount.signature, InsightCount.scope, InsightCount.item, *sums)
        .where(InsightCount.scope.in_((ATTEMPT, WAIT)), *recent)
        .group_by(InsightCount.signature, InsightCount.scope, InsightCount.item)
    )
    for row in split:
        item = stats[row.signature]
        into = item.by_attempt if row.scope == ATTEMPT else item.by_wait
        into.setdefault(int(row.item), Tally()).add(row)
    for key in keys:
        item = stats[key]
        # The latest decisions; one execution's runs are several, so a few more are read.
        latest = session.execute(
            select(Execution.execution_id, Decision.created_at, Decision.rule)
            .join(Execution, Execution.id == Decision.execution_pk)
            .where(Decision.signature == key, Decision.origin == "policy")
            .order_by(Decision.created_at.desc(), Decision.id.desc())
            .limit(EXAMPLES * (MAX_RUNS_READ if detail else 0) + 1)
        ).all()
        item.rule = latest[0].rule if latest else None
        if detail:
            seen: dict[str, Example] = {}
            for execution_id, at, _ in latest:
                seen.setdefault(execution_id, Example(execution_id, at))
            item.examples = list(seen.values())[:EXAMPLES]
    if detail:
        _top_items(session, keys, stats)
    return [stats[key] for key in keys]


def _top_items(session: Session, keys: Sequence[str], stats: dict[str, SignatureStats]) -> None:
    """The jobs and hosts with the most restarts (then failures) of each signature."""
    ranked = (
        select(
            InsightCount,
            func.row_number()
            .over(
                partition_by=(InsightCount.signature, InsightCount.scope),
                order_by=(
                    InsightCount.restarts.desc(),
                    InsightCount.failures.desc(),
                    InsightCount.item,
                ),
            )
            .label("place"),
            func.count()
            .over(partition_by=(InsightCount.signature, InsightCount.scope))
            .label("of"),
        )
        .where(
            InsightCount.signature.in_(keys),
            InsightCount.scope.in_((JOB, HOST)),
            InsightCount.day == ALL_TIME,
        )
        .subquery()
    )
    counted = select(ranked).where(ranked.c.place <= TOP_ITEMS).order_by(ranked.c.place)
    for row in session.execute(counted).mappings():
        item = stats[row["signature"]]
        tally = Tally(**{name: row[name] for name in COUNTERS})
        if row["scope"] == JOB:
            item.jobs.append((row["item"], tally))
            item.job_count = row["of"]
        else:
            item.hosts.append((row["item"], tally))
            item.host_count = row["of"]
