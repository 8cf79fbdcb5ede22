"""The policy's arithmetic of time: backoff delays, host quarantines, the circuit breaker."""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Iterable
from datetime import datetime

from app.policy.loader import MAX_RESTARTS_LIMIT
from app.policy.model import Backoff, BreakerState, CircuitBreaker, HostLimit, RestartOutcome


def backoff_delay(backoff: Backoff, execution_id: str, prior_restarts: int) -> float:
    """Seconds to wait before restart number ``prior_restarts + 1`` of this execution.

    The base delay of attempt k (0-based) is ``min(max, initial * factor**k)``; jitter moves it
    by up to ±``jitter`` of itself, by a fraction fixed by sha256(execution id, k); the result is
    clamped to [0, max] and never below the delay of any earlier attempt. Rounded to whole
    seconds (rounding keeps both properties: durations in the policy are whole seconds).
    """
    cap = backoff.max.total_seconds()
    base = min(backoff.initial.total_seconds(), cap)
    delay = 0.0
    for attempt in range(min(prior_restarts, MAX_RESTARTS_LIMIT) + 1):
        jittered = base * (1.0 + backoff.jitter * jitter_unit(execution_id, attempt))
        delay = max(delay, min(max(jittered, 0.0), cap))
        base = min(base * backoff.factor, cap)
    return float(round(delay))


def quarantined_until(
    limit: HostLimit, failure_times: Iterable[datetime], now: datetime
) -> datetime | None:
    """When a host's quarantine ends, or None if it is not quarantined at ``now``.

    A failure at time t that makes ``limit.failures`` failures inside (t - window, t]
    quarantines the host during [t, t + quarantine). Failures after ``now`` are ignored.
    """
    times = sorted(t for t in failure_times if t <= now)
    start = 0
    until: datetime | None = None
    for index, moment in enumerate(times):
        while times[start] <= moment - limit.window:
            start += 1
        if index - start + 1 >= limit.failures and now < moment + limit.quarantine:
            until = moment + limit.quarantine
    return until


def breaker_state(
    breaker: CircuitBreaker, outcomes: Iterable[RestartOutcome], now: datetime
) -> BreakerState:
    """Whether the circuit breaker is open at ``now``.

    At a moment t the trip condition holds when the outcomes inside (t - window, t] number at
    least ``min_restarts`` and the share that failed again is at least ``failure_ratio``. The
    breaker is open at ``now`` when the condition holds now or held at some moment less than
    ``cool_down`` ago. Outcomes after ``now`` are ignored. The condition can only change when an
    outcome enters the window (its time) or leaves it (its time + window), so only those moments
    are evaluated.
    """
    finished = sorted((o for o in outcomes if o.at <= now), key=lambda o: o.at)
    times = [o.at for o in finished]
    failed_before = [0]
    for outcome in finished:
        failed_before.append(failed_before[-1] + (1 if outcome.failed_again else 0))
    moments = sorted({*times, *(t + breaker.window for t in times if t + breaker.window <= now)})
    held_end: datetime | None = None
    holding_now = False
    counts = (0, 0)
    for index, moment in enumerate(moments):
        high = bisect.bisect_right(times, moment)
        low = bisect.bisect_right(times, moment - breaker.window)
        total = high - low
        failed = failed_before[high] - failed_before[low]
        if total >= breaker.min_restarts and failed / total >= breaker.failure_ratio:
            counts = (failed, total)
            if index + 1 < len(moments):
                held_end = moments[index + 1]
            else:
                holding_now = True
    if holding_now:
        return BreakerState(True, now + breaker.cool_down, *counts)
    if held_end is not None and now < held_end + breaker.cool_down:
        return BreakerState(True, held_end + breaker.cool_down, *counts)
    high = len(times)
    low = bisect.bisect_right(times, now - breaker.window)
    return BreakerState(False, None, failed_before[high] - failed_before[low], high - low)


def jitter_unit(execution_id: str, attempt: int) -> float:
    """A number in [-1, 1) fixed by the execution and the attempt."""
    digest = hashlib.sha256(f"{execution_id}:{attempt}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**63 - 1.0
