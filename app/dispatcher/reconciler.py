"""The reconciler: page through the Runner's executions so a lost callback is not a missed
failure, and fetch the job records that job globs need."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import islice

from app.core.decisions import decide_failed_runs, undecided_failures
from app.core.ingest import document_deliveries, ingest_and_decide
from app.core.jobs import jobs_to_fetch, record_job
from app.core.queries import known_accounts
from app.db import refresh_planner_statistics, utcnow
from app.runner.client import RunnerClient
from app.runner.documents import ExecutionDocument
from app.runner.errors import RunnerError
from app.runtime import Runtime

log = logging.getLogger(__name__)

JOB_REFRESH_BATCH = 50
JOB_REFRESH_INTERVAL = 3.0


@dataclass
class ReconcileReport:
    accounts: int = 0
    documents: int = 0
    stored: int = 0
    restarts_queued: int = 0
    errors: list[str] = field(default_factory=list)


class Reconciler:
    """Pages through the Runner's executions so a lost callback is not a missed failure."""

    def __init__(self, runtime: Runtime, client: RunnerClient) -> None:
        self.runtime = runtime
        self.client = client
        self.settings = runtime.settings
        self.on_queued: Callable[[], None] | None = None

    def _accounts(self) -> list[str]:
        with self.runtime.transaction() as session:
            seen = set(known_accounts(session))
        return sorted(seen | set(self.settings.reconcile_accounts))

    def run_once(self) -> ReconcileReport:
        report = ReconcileReport()
        limit = self.settings.reconcile_max_pages * 100
        for account in self._accounts():
            report.accounts += 1
            try:
                documents: list[ExecutionDocument] = list(
                    islice(self.client.iter_account_executions(account, size=100), limit)
                )
            except RunnerError as exc:
                report.errors.append(f"{account}: {exc}")
                log.warning("reconciler: listing executions of %s failed: %s", account, exc)
                continue
            report.documents += len(documents)
            if not documents:
                continue
            policy = self.runtime.current_policy().policy
            with self.runtime.transaction() as session:
                ingested = ingest_and_decide(
                    session,
                    document_deliveries(documents),
                    utcnow(),
                    policy,
                    defer_unknown_jobs=True,
                )
            report.stored += ingested.stored.accepted
            report.restarts_queued += ingested.decided.queued
        self.refresh_jobs(report)
        report.restarts_queued += self.decide_undecided()
        refresh_planner_statistics(self.runtime.engine)
        if report.restarts_queued and self.on_queued is not None:
            self.on_queued()
        return report

    def decide_undecided(self) -> int:
        """Decide failures left for later (their job was unknown); return restarts queued."""
        policy = self.runtime.current_policy().policy
        with self.runtime.transaction() as session:
            pending = undecided_failures(session)
            if not pending:
                return 0
            decided = decide_failed_runs(
                session, pending, utcnow(), policy, defer_unknown_jobs=True
            )
        return decided.queued

    def refresh_jobs(self, report: ReconcileReport) -> None:
        """Fetch job records respawn has not seen yet (their descriptions feed job globs)."""
        with self.runtime.transaction() as session:
            missing = jobs_to_fetch(session, JOB_REFRESH_BATCH)
        fetched: list[tuple[str | None, str | None]] = []
        for job in missing:
            # No transaction is open while the Runner is called.
            try:
                fetched.append((self.client.get_job(job.account, job.job_id).description, None))
            except RunnerError as exc:
                fetched.append((None, str(exc)))
        if fetched:
            now = utcnow()
            with self.runtime.transaction() as session:
                for job, (description, error) in zip(missing, fetched, strict=True):
                    record_job(session, job, description, error, now)

    def run_forever(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.run_once()
            except Exception:
                log.exception("reconciler pass failed; next pass as scheduled")
            stop.wait(self.settings.reconcile_interval)


def refresh_jobs_forever(
    reconciler: Reconciler, stop: threading.Event, wake: threading.Event, interval: float
) -> None:
    """Fetch new jobs' records and decide the failures that waited for them, woken by the
    receiver (it never calls the Runner itself) or every `interval` seconds."""
    while not stop.is_set():
        wake.wait(interval)
        wake.clear()
        if stop.is_set():
            return
        try:
            reconciler.refresh_jobs(ReconcileReport())
            if reconciler.decide_undecided() and reconciler.on_queued is not None:
                reconciler.on_queued()
        except Exception:  # the loop must outlive any one failure
            log.exception("job refresh failed; trying again shortly")
