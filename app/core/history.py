"""Recent history read per key, the latest of each: a host's failures (the per-host limit's
input) and a signature's sightings (its breaker's input).

Both are read for many keys at once: a batch of decisions, a run naming thousands of hosts.
One statement takes the keys' rows newest first, up to the cap per key times the keys. When
fewer come back, that was every row of the period, and each key keeps its latest. When the
limit is reached, a key with many rows may have crowded out another's, so each key is read
on its own: a `UNION ALL` of one `ORDER BY ... LIMIT` per key, each served by an index
walked backwards, at most `UNION_TERMS` a statement (SQLite allows 500 terms in a compound
SELECT). Keys go `IN_CHUNK` at a time (bound parameters are limited too).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from sqlalchemy import Row, Select, select, union_all
from sqlalchemy.orm import Session

from app.core.stats import MAX_HOST_HISTORY, MAX_SIGHTINGS, as_utc
from app.models import Decision, Execution, FailureSignature, HostFailure
from app.policy import Policy, Sighting, SignatureBreaker

IN_CHUNK = 2_000
UNION_TERMS = 200


def _latest_each(
    session: Session,
    keys: Sequence[str],
    query: Callable[[Sequence[str]], Select[*tuple[Any, ...]]],
    cap: int,
) -> list[Row[*tuple[Any, ...]]]:
    """The rows of `query(keys)` (newest first, unlimited), at least the latest `cap` of each
    key: all of them when there are no more than `cap` per key on average."""
    rows: list[Row[*tuple[Any, ...]]] = []
    for start in range(0, len(keys), IN_CHUNK):
        chunk = keys[start : start + IN_CHUNK]
        found = session.execute(query(chunk).limit(cap * len(chunk))).all()
        if len(found) == cap * len(chunk):
            found = []
            for first in range(0, len(chunk), UNION_TERMS):
                each = [query([key]).limit(cap) for key in chunk[first : first + UNION_TERMS]]
                union = union_all(*(select(q.subquery()) for q in each))
                found += session.execute(each[0] if len(each) == 1 else union).all()
        rows += found
    return rows


def host_failure_times(
    session: Session, policy: Policy, hosts: Sequence[str], now: dt.datetime
) -> dict[str, tuple[dt.datetime, ...]]:
    """Each host's failures inside the per-host limit's reach (the latest
    `MAX_HOST_HISTORY`), oldest first."""
    per_host = policy.limits.per_host
    if per_host is None or not hosts:
        return {}
    since = now - (per_host.window + per_host.quarantine)
    history: dict[str, list[dt.datetime]] = {host: [] for host in hosts}

    def query(keys: Sequence[str]) -> Select[*tuple[Any, ...]]:
        return (
            select(HostFailure.host, HostFailure.occurred_at)
            .where(HostFailure.host.in_(keys), HostFailure.occurred_at >= since)
            .order_by(HostFailure.occurred_at.desc())
        )

    for host, occurred_at in _latest_each(session, list(history), query, MAX_HOST_HISTORY):
        history[host].append(occurred_at)
    return {host: tuple(sorted(times)[-MAX_HOST_HISTORY:]) for host, times in history.items()}


def sightings_of(
    session: Session, breaker: SignatureBreaker, keys: Iterable[str], now: dt.datetime
) -> dict[str, list[Sighting]]:
    """The failed runs the policy decided with each of these signatures inside the breaker's
    lookback (the latest `MAX_SIGHTINGS`), oldest first; none from before an operator last
    closed it by hand."""
    found: dict[str, list[Sighting]] = {key: [] for key in keys}
    closed = FailureSignature.closed_at

    def query(keys: Sequence[str]) -> Select[*tuple[Any, ...]]:
        return (
            select(
                Decision.signature, Decision.created_at, Execution.execution_id, Execution.job_id
            )
            .join(Execution, Execution.id == Decision.execution_pk)
            .outerjoin(FailureSignature, FailureSignature.key == Decision.signature)
            .where(
                Decision.signature.in_(keys),
                Decision.origin == "policy",
                Decision.created_at >= now - breaker.lookback,
                Decision.created_at <= now,
                closed.is_(None) | (Decision.created_at > closed),
            )
            .order_by(Decision.created_at.desc())
        )

    for key, at, execution_id, job_id in _latest_each(session, list(found), query, MAX_SIGHTINGS):
        found[key].append(Sighting(as_utc(at), execution_id, job_id))
    for key, sightings in found.items():
        found[key] = sorted(sightings)[-MAX_SIGHTINGS:]
    return found


def sightings_for(
    session: Session, breaker: SignatureBreaker, key: str, now: dt.datetime
) -> list[Sighting]:
    """`sightings_of` for one signature."""
    return sightings_of(session, breaker, [key], now)[key]


def closed_at(session: Session, keys: Iterable[str]) -> dict[str, dt.datetime]:
    """When an operator last closed each of these signatures' breakers, for those closed."""
    rows = session.execute(
        select(FailureSignature.key, FailureSignature.closed_at).where(
            FailureSignature.key.in_(list(keys)), FailureSignature.closed_at.is_not(None)
        )
    )
    return {key: as_utc(at) for key, at in rows}
