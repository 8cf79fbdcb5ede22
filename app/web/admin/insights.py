"""The Insights page's view model: one page of error signatures with what their restarts
achieved, from the insight counters (`app.core.insights_read`), and the rule each supports."""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

from sqlalchemy.orm import Session

from app.core.insights_read import SignatureStats, Tally, rank_signatures, signature_stats
from app.core.suggest import Suggestion, snippet, suggest_for
from app.policy import Policy

DAYS = 30
"""The span the page covers, in days up to today."""
PER_PAGE = 10
MIN_SAMPLES = 10
"""As `respawn policy suggest`'s default."""
SPARK_WIDTH = 150
SPARK_HEIGHT = 28


@dataclass(frozen=True)
class AttemptRow:
    attempt: int
    settled: int
    recovered: int
    restarts: int

    @property
    def percent(self) -> int | None:
        return round(100 * self.recovered / self.settled) if self.settled else None


@dataclass(frozen=True)
class SparkBar:
    x: float
    height: float
    day: dt.date
    failures: int
    restarts: int


@dataclass(frozen=True)
class SignatureCard:
    stats: SignatureStats
    attempts: list[AttemptRow]
    spark: list[SparkBar]
    peak: int
    suggestion: Suggestion | None
    rule_yaml: str | None

    @property
    def total(self) -> Tally:
        return self.stats.total

    @property
    def percent(self) -> int | None:
        rate = self.stats.total.rate
        return None if rate is None else round(100 * rate)


@dataclass(frozen=True)
class InsightsPage:
    cards: list[SignatureCard]
    page: int
    pages: int
    total: int
    since: dt.date
    days: int = DAYS
    min_samples: int = MIN_SAMPLES
    spark_width: int = SPARK_WIDTH
    spark_height: int = SPARK_HEIGHT


def _spark(stats: SignatureStats, since: dt.date, days: int) -> tuple[list[SparkBar], int]:
    peak = max((t.failures for t in stats.by_day.values()), default=0)
    width = SPARK_WIDTH / days
    bars = []
    for n in range(days):
        day = since + dt.timedelta(days=n)
        tally = stats.by_day.get(day, Tally())
        height = round(SPARK_HEIGHT * tally.failures / peak, 1) if peak else 0.0
        if tally.failures:
            height = max(height, 1.5)  # a single failure stays visible
        bars.append(SparkBar(round(n * width, 2), height, day, tally.failures, tally.restarts))
    return bars, peak


def insights_page(session: Session, policy: Policy, now: dt.datetime, page: int) -> InsightsPage:
    since = now.astimezone(dt.UTC).date() - dt.timedelta(days=DAYS - 1)
    keys, total = rank_signatures(session, since, PER_PAGE, (page - 1) * PER_PAGE)
    cards = []
    for stats in signature_stats(session, keys, since, detail=True):
        attempts = [
            AttemptRow(n, t.settled, t.recovered, t.restarts)
            for n, t in sorted(stats.by_attempt.items())
        ]
        spark, peak = _spark(stats, since, DAYS)
        found = suggest_for(stats, policy, MIN_SAMPLES)
        rule = snippet([found]).split("\n", 2)[2] if found else None
        cards.append(SignatureCard(stats, attempts, spark, peak, found, rule))
    pages = max(1, math.ceil(total / PER_PAGE))
    return InsightsPage(cards, page, pages, total, since)
