"""Restart insights: what restarts of each error signature achieved, kept as counters.

Each automatic restart is followed from its failure to the end of the run it started, in the
transactions that record them (docs/policy.md, "Suggestions"):

- a failed run the policy decides counts as a failure of its signature (`record_failure`);
- a restart the Runner accepted counts as a restart, by attempt, by the wait before it was
  sent (first attempts) and by job and host (`record_restart_sent`);
- once the run it started has ended, each host it named succeeded, failed again with the same
  signature or failed differently (`record_restart_outcomes`); a host never judged is one
  whose run never finished.

The counters live in `insight_counts` (one row per signature, scope, item and day of the
failure), added to with an upsert so that concurrent writers never lose a count. A
transaction's additions are gathered and written by one upsert just before it commits
(`_add_at_commit`). `rebuild` recomputes them from the record, batch by batch, in the
caller's transaction.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy import delete, event, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from app.models import Decision, Execution, HostFailure, InsightCount, Restart, RestartState
from app.policy import HostFailure as PolicyHostFailure
from app.policy import failure_signature

COUNTERS = (
    "failures",
    "restarts",
    "hosts",
    "settled",
    "recovered",
    "host_succeeded",
    "host_failed_same",
    "host_failed_other",
    "recovery_seconds",
)
ALL, ATTEMPT, WAIT, JOB, HOST = "all", "attempt", "wait", "job", "host"
ALL_TIME = dt.date(1970, 1, 1)
"""The day of `job` and `host` rows: they are kept for the whole history, not per day, so the
rows of a signature stay bounded by the fleet, not by time."""
WAIT_BUCKETS = (0, 60, 300, 900, 1800, 3600, 7200, 14400)
"""Lower bounds, in seconds, of the waits first restarts are counted by."""
NO_HOST_LIST = "(no host list)"
BATCH = 1000

Key = tuple[str, str, str, dt.date]
Deltas = dict[Key, dict[str, float]]


def wait_bucket(seconds: float) -> int:
    return max(b for b in WAIT_BUCKETS if b <= max(seconds, 0))


def _add(deltas: Deltas, key: Key, **counts: float) -> None:
    row = deltas.setdefault(key, dict.fromkeys(COUNTERS, 0))
    for name, value in counts.items():
        row[name] += value


# --- what one fact adds -----------------------------------------------------------------------


@dataclass(frozen=True)
class RestartFacts:
    """One automatic restart as the counters see it."""

    restart_id: int
    signature: str
    job_id: str
    hosts: tuple[str, ...]
    attempt: int
    wait_seconds: float
    day: dt.date


def _failure(deltas: Deltas, signature: str, job_id: str, day: dt.date) -> None:
    _add(deltas, (signature, ALL, "", day), failures=1)
    _add(deltas, (signature, JOB, job_id, ALL_TIME), failures=1)


def _sent(deltas: Deltas, facts: RestartFacts) -> None:
    counts = {"restarts": 1, "hosts": max(len(facts.hosts), 1)}
    for key in _restart_keys(facts):
        _add(deltas, key, **counts)
    for host in facts.hosts or (NO_HOST_LIST,):
        _add(deltas, (facts.signature, HOST, host, ALL_TIME), restarts=1, hosts=1)


def _restart_keys(facts: RestartFacts) -> Iterator[Key]:
    sig, day = facts.signature, facts.day
    yield (sig, ALL, "", day)
    yield (sig, ATTEMPT, str(facts.attempt), day)
    if facts.attempt == 1:
        yield (sig, WAIT, str(wait_bucket(facts.wait_seconds)), day)
    yield (sig, JOB, facts.job_id, ALL_TIME)


def _outcome(
    deltas: Deltas, facts: RestartFacts, outcomes: Mapping[str, str], recovery: float
) -> None:
    """`outcomes` maps each named host (or NO_HOST_LIST) to succeeded, failed_same or
    failed_other."""
    recovered = all(o == "succeeded" for o in outcomes.values())
    per_host = {f"host_{o}": 0 for o in ("succeeded", "failed_same", "failed_other")}
    for outcome in outcomes.values():
        per_host[f"host_{outcome}"] += 1
    for key in _restart_keys(facts):
        _add(
            deltas,
            key,
            settled=1,
            recovered=int(recovered),
            recovery_seconds=recovery if recovered else 0.0,
            **per_host,
        )
    for host, outcome in outcomes.items():
        ok = outcome == "succeeded"
        _add(
            deltas,
            (facts.signature, HOST, host, ALL_TIME),
            settled=1,
            recovered=int(ok),
            recovery_seconds=recovery if ok else 0.0,
            **{f"host_{outcome}": 1},
        )


# --- reading the record -------------------------------------------------------------------------


def _host_signature(row: HostFailure) -> str | None:
    text = "\n".join(part for part in (row.message, row.stderr_tail) if part)
    found = failure_signature((PolicyHostFailure(row.host, row.failure_class, text),))
    return found.key if found is not None else None


def restart_facts(session: Session, restarts: Sequence[Restart]) -> dict[int, RestartFacts]:
    """The facts of sent automatic restarts whose failure had a signature (a few queries)."""
    wanted = [r for r in restarts if not r.manual and r.state == RestartState.DONE]
    if not wanted:
        return {}
    # Attempt n: the n-th automatic restart of the execution that was sent. Each wanted
    # restart is one of them, so the same rows name every execution's job and, with each
    # restart, its decision's signature and time (one statement for all of it).
    sent: dict[int, list[int]] = defaultdict(list)
    jobs: dict[int, str] = {}
    decided: dict[int, tuple[str | None, dt.datetime]] = {}
    for pk, rid, job, signature, created_at in session.execute(
        select(
            Restart.execution_pk,
            Restart.id,
            Execution.job_id,
            Decision.signature,
            Decision.created_at,
        )
        .join(Execution, Execution.id == Restart.execution_pk)
        .join(Decision, Decision.id == Restart.decision_id)
        .where(
            Restart.execution_pk.in_({r.execution_pk for r in wanted}),
            Restart.manual.is_(False),
            Restart.state == RestartState.DONE,
        )
    ):
        sent[pk].append(rid)
        jobs[pk] = job
        decided[rid] = (signature, created_at)
    found = {}
    for restart in wanted:
        job_id = jobs.get(restart.execution_pk)
        if restart.id not in decided or job_id is None:
            continue
        signature, created_at = decided[restart.id]
        if signature is None:
            continue
        sent_at = restart.sent_at or created_at
        found[restart.id] = RestartFacts(
            restart_id=restart.id,
            signature=signature,
            job_id=job_id,
            hosts=tuple(restart.hosts or ()),
            attempt=sum(1 for rid in sent[restart.execution_pk] if rid <= restart.id),
            wait_seconds=(sent_at - created_at).total_seconds(),
            day=created_at.astimezone(dt.UTC).date(),
        )
    return found


def _outcomes(
    session: Session, restarts: Sequence[Restart], facts: Mapping[int, RestartFacts]
) -> Iterator[tuple[RestartFacts, dict[str, str], float]]:
    """Each finished restart with its hosts' outcomes and its time to recovery."""
    settled = [r for r in restarts if r.id in facts and r.result is not None]
    if not settled:
        return
    pks = {r.execution_pk for r in settled}
    failures: dict[tuple[int, int], list[HostFailure]] = defaultdict(list)
    for row in session.scalars(select(HostFailure).where(HostFailure.execution_pk.in_(pks))):
        failures[(row.execution_pk, row.run_index)].append(row)
    first = {
        pk: at
        for pk, at in session.execute(
            select(Execution.id, Execution.first_failure_at).where(Execution.id.in_(pks))
        )
    }
    for restart in settled:
        item = facts[restart.id]
        next_run = failures.get((restart.execution_pk, restart.run_index + 1), [])
        by_host = {row.host: row for row in next_run}
        outcomes: dict[str, str] = {}
        if restart.result == "succeeded":
            outcomes = dict.fromkeys(item.hosts or (NO_HOST_LIST,), "succeeded")
        elif item.hosts:
            for host in item.hosts:
                failed = by_host.get(host)
                if failed is None:
                    outcomes[host] = "succeeded"
                else:
                    same = _host_signature(failed) == item.signature
                    outcomes[host] = "failed_same" if same else "failed_other"
        else:
            hosts = [
                PolicyHostFailure(
                    r.host,
                    r.failure_class,
                    "\n".join(p for p in (r.message, r.stderr_tail) if p),
                )
                for r in sorted(next_run, key=lambda r: r.host)
            ]
            found = failure_signature(hosts)
            same = found is not None and found.key == item.signature
            outcomes[NO_HOST_LIST] = "failed_same" if same else "failed_other"
        began = first.get(restart.execution_pk)
        recovery = (
            (restart.result_at - began).total_seconds()
            if began is not None and restart.result_at is not None
            else 0.0
        )
        yield item, outcomes, max(recovery, 0.0)


# --- writing ------------------------------------------------------------------------------------


def _write(session: Session, deltas: Deltas) -> None:
    """Add the deltas to the counters: one upsert, rows in key order (no lock-order deadlocks)."""
    if not deltas:
        return
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    table = InsightCount.__table__
    statement = dialect.insert(table)
    statement = statement.on_conflict_do_update(
        index_elements=["signature", "scope", "item", "day"],
        set_={name: table.c[name] + statement.excluded[name] for name in COUNTERS},
    )
    rows = [
        {"signature": k[0], "scope": k[1], "item": k[2][:255], "day": k[3], **counts}
        for k, counts in sorted(deltas.items())
    ]
    session.execute(statement, rows)


_AT_COMMIT = "respawn_insight_deltas"


def _add_at_commit(session: Session, deltas: Deltas) -> None:
    """Add the deltas to what this transaction writes when it commits.

    Every decision and every restart sent of a signature adds to the same few rows (today's
    `all` row, its job's row), and on PostgreSQL an upserted row stays locked until its
    transaction ends: written mid-transaction, the processors and dispatchers of all
    processes queued behind whoever held it for the rest of their work (a backlog of
    seconds under a stream of failures). Written last, a row is held for the commit alone.
    The additions belong to the transaction they were made in: a rollback drops them.
    """
    if not deltas:
        return
    root = session.get_transaction()
    owner, pending = session.info.get(_AT_COMMIT, (None, {}))
    if owner is not root:
        pending = {}
        session.info[_AT_COMMIT] = (root, pending)
    for key, counts in deltas.items():
        _add(pending, key, **counts)


@event.listens_for(Session, "before_commit")
def _write_at_commit(session: Session) -> None:
    owner, pending = session.info.pop(_AT_COMMIT, (None, {}))
    if owner is session.get_transaction():
        _write(session, pending)


def record_failure(session: Session, signature: str, job_id: str, at: dt.datetime) -> None:
    """A failed run with this signature was decided by the policy."""
    deltas: Deltas = {}
    _failure(deltas, signature, job_id, at.astimezone(dt.UTC).date())
    _add_at_commit(session, deltas)


def record_restart_sent(session: Session, restart: Restart) -> None:
    """The Runner accepted this restart (flushes it first, so its attempt counts)."""
    session.flush()
    deltas: Deltas = {}
    for facts in restart_facts(session, [restart]).values():
        _sent(deltas, facts)
    _add_at_commit(session, deltas)


def record_restart_outcomes(session: Session, restart_ids: Iterable[int]) -> None:
    """The runs these restarts started have ended (their `result` is set)."""
    ids = sorted(set(restart_ids))
    if not ids:
        return
    session.flush()
    restarts = list(session.scalars(select(Restart).where(Restart.id.in_(ids))))
    deltas: Deltas = {}
    for facts, outcomes, recovery in _outcomes(session, restarts, restart_facts(session, restarts)):
        _outcome(deltas, facts, outcomes, recovery)
    _add_at_commit(session, deltas)


@dataclass(frozen=True)
class Rebuilt:
    failures: int
    restarts: int
    settled: int
    rows: int


def rebuild(session: Session) -> Rebuilt:
    """Recompute every counter from the record (after a normaliser or policy change)."""
    session.info.pop(_AT_COMMIT, None)  # counted below, from the record
    session.execute(delete(InsightCount))
    deltas: Deltas = {}
    failures = restarts_seen = settled = 0
    after = 0
    while True:
        batch = session.execute(
            select(Decision.id, Decision.signature, Decision.created_at, Execution.job_id)
            .join(Execution, Execution.id == Decision.execution_pk)
            .where(
                Decision.origin == "policy",
                Decision.signature.is_not(None),
                Decision.id > after,
            )
            .order_by(Decision.id)
            .limit(BATCH)
        ).all()
        for _, signature, created_at, job_id in batch:
            _failure(deltas, signature or "", job_id, created_at.astimezone(dt.UTC).date())
        failures += len(batch)
        if len(batch) < BATCH:
            break
        after = batch[-1][0]
    after = 0
    while True:
        restarts = list(
            session.scalars(
                select(Restart)
                .where(
                    Restart.id > after,
                    Restart.manual.is_(False),
                    Restart.state == RestartState.DONE,
                )
                .order_by(Restart.id)
                .limit(BATCH)
            )
        )
        facts = restart_facts(session, restarts)
        for item in facts.values():
            _sent(deltas, item)
        restarts_seen += len(facts)
        for item, outcomes, recovery in _outcomes(session, restarts, facts):
            _outcome(deltas, item, outcomes, recovery)
            settled += 1
        if len(restarts) < BATCH:
            break
        after = restarts[-1].id
    items = sorted(deltas.items())
    for start in range(0, len(items), BATCH):
        _write(session, dict(items[start : start + BATCH]))
    return Rebuilt(failures, restarts_seen, settled, len(items))
