"""Reading restart insights: the counters of a page of signatures, never the whole history.

Every query here reads `insight_counts` rows of the signatures asked for (or ranks signatures
by their per-day `all` rows), plus a few indexed lookups per signature (examples, the rule
that last decided it); the cost follows the number of signatures shown and days covered.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import func, select, union_all
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

    def add_values(self, values: Sequence[float | None]) -> None:
        """Add counters given in `COUNTERS` order (None counts as 0)."""
        for name, value in zip(COUNTERS, values, strict=True):
            if value:
                setattr(self, name, getattr(self, name) + value)

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
    """Filled with `detail` only (the page's sparkline)."""
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
    """The counters of these signatures since the day, in the order given, and the rule of
    each one's latest decision. With `detail`, their counters by day, top jobs and hosts
    (whole history) and example executions too."""
    if not keys:
        return []
    # Each signature's text, and the rule of its latest decision (an index walk per key).
    latest_rule = (
        select(Decision.rule)
        .where(Decision.signature == FailureSignature.key, Decision.origin == "policy")
        .order_by(Decision.created_at.desc(), Decision.id.desc())
        .limit(1)
        .correlate(FailureSignature)
        .scalar_subquery()
    )
    stats = {key: SignatureStats(key, "unknown", "") for key in keys}
    for row, rule in session.execute(
        select(FailureSignature, latest_rule).where(FailureSignature.key.in_(keys))
    ):
        item = stats[row.key]
        item.failure_class, item.text, item.rule = row.failure_class, row.text, rule
    sums = [func.sum(InsightCount.__table__.c[name]) for name in COUNTERS]
    recent = (InsightCount.signature.in_(keys), InsightCount.day >= since)
    # Summed in the database: one row per signature (and day, for the page's sparkline).
    per = (InsightCount.signature, InsightCount.day) if detail else (InsightCount.signature,)
    for row in session.execute(
        select(*per, *sums).where(InsightCount.scope == ALL, *recent).group_by(*per)
    ):
        item, values = stats[row[0]], row[len(per) :]
        item.total.add_values(values)
        if detail:
            item.by_day.setdefault(row[1], Tally()).add_values(values)
    # One row per signature and attempt, or wait.
    for key, scope, bucket, *totals in session.execute(
        select(InsightCount.signature, InsightCount.scope, InsightCount.item, *sums)
        .where(InsightCount.scope.in_((ATTEMPT, WAIT)), *recent)
        .group_by(InsightCount.signature, InsightCount.scope, InsightCount.item)
    ):
        into = stats[key].by_attempt if scope == ATTEMPT else stats[key].by_wait
        into.setdefault(int(bucket), Tally()).add_values(totals)
    for key in keys if detail else ():
        # The latest decisions; one execution's runs are several, so a few more are read.
        latest = session.execute(
            select(Execution.execution_id, Decision.created_at)
            .join(Execution, Execution.id == Decision.execution_pk)
            .where(Decision.signature == key, Decision.origin == "policy")
            .order_by(Decision.created_at.desc(), Decision.id.desc())
            .limit(EXAMPLES * MAX_RUNS_READ)
        ).all()
        seen: dict[str, Example] = {}
        for execution_id, at in latest:
            seen.setdefault(execution_id, Example(execution_id, at))
        stats[key].examples = list(seen.values())[:EXAMPLES]
    if detail:
        _top_items(session, keys, stats)
    return [stats[key] for key in keys]


def _top_items(session: Session, keys: Sequence[str], stats: dict[str, SignatureStats]) -> None:
    """The jobs and hosts with the most restarts (then failures) of each signature, and how
    many there are.

    One limited read per signature and scope, walking `ix_insight_counts_top` backwards, so
    the page reads the few it shows, not every host a signature ever failed on.
    """
    table = InsightCount.__table__
    columns = [table.c.signature, table.c.scope, table.c.item, *(table.c[n] for n in COUNTERS)]
    firsts = [
        select(*columns)
        .where(
            InsightCount.signature == key,
            InsightCount.scope == scope,
            InsightCount.day == ALL_TIME,
        )
        .order_by(
            InsightCount.restarts.desc(), InsightCount.failures.desc(), InsightCount.item.desc()
        )
        .limit(TOP_ITEMS)
        .subquery()
        for key in keys
        for scope in (JOB, HOST)
    ]
    rows = session.execute(union_all(*(select(first) for first in firsts))).mappings()
    for row in rows:
        item = stats[row["signature"]]
        tally = Tally(**{name: row[name] for name in COUNTERS})
        (item.jobs if row["scope"] == JOB else item.hosts).append((row["item"], tally))
    # Each read came in order; a union promises no order across them, so it is restored here.
    for item in stats.values():
        for listed in (item.jobs, item.hosts):
            listed.sort(
                key=lambda pair: (pair[1].restarts, pair[1].failures, pair[0]), reverse=True
            )
    counts = session.execute(
        select(InsightCount.signature, InsightCount.scope, func.count())
        .where(
            InsightCount.signature.in_(keys),
            InsightCount.scope.in_((JOB, HOST)),
            InsightCount.day == ALL_TIME,
        )
        .group_by(InsightCount.signature, InsightCount.scope)
    )
    for key, scope, count in counts:
        if scope == JOB:
            stats[key].job_count = count
        else:
            stats[key].host_count = count
