"""The reconciler: page through the Runner's executions so a lost callback is not a missed
failure, and fetch the job records that job globs need."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from app import metrics
from app.core.decisions import decide_failed_runs, undecided_failures
from app.core.deliveries import Delivery, document_deliveries, parse_fetched
from app.core.ingest import ingest_and_decide
from app.core.jobs import jobs_to_fetch, record_job
from app.core.queries import known_accounts, latest_event_ms
from app.db import refresh_planner_statistics, utcnow
from app.runner.client import RunnerClient
from app.runner.documents import FAILED_STATUSES, ExecutionDocument
from app.runner.errors import RunnerError
from app.runner.listing import recent_executions
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
    feeds_recovered: int = 0
    errors: list[str] = field(default_factory=list)
    capped: list[str] = field(default_factory=list)


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
        since_ms = int((utcnow().timestamp() - self.settings.reconcile_window) * 1000)
        for account in self._accounts():
            report.accounts += 1
            try:
                listing = recent_executions(
                    self.client, account, since_ms, self.settings.reconcile_max_pages
                )
            except RunnerError as exc:
                report.errors.append(f"{account}: {exc}")
                log.warning("reconciler: listing executions of %s failed: %s", account, exc)
                continue
            if listing.capped:
                report.capped.append(account)
                self._report_cap(account, listing.pages)
            documents = listing.documents
            report.documents += len(documents)
            if not documents:
                continue
            deliveries = self._lost_feeds(documents, report) + document_deliveries(documents)
            policy = self.runtime.current_policy().policy
            with self.runtime.transaction() as session:
                ingested = ingest_and_decide(
                    session, deliveries, utcnow(), policy, defer_unknown_jobs=True
                )
            report.stored += ingested.stored.accepted
            report.restarts_queued += ingested.decided.queued
        self.refresh_jobs(report)
        report.restarts_queued += self.decide_undecided()
        refresh_planner_statistics(self.runtime.engine)
        if report.restarts_queued and self.on_queued is not None:
            self.on_queued()
        return report

    def _report_cap(self, account: str, pages: int) -> None:
        text = (
            f"account {account}: stopped at the page cap ({pages} pages, "
            "RESPAWN_RECONCILE_MAX_PAGES) before the reconcile window's start; older "
            "executions in the window were not checked"
        )
        log.warning("reconciler: %s", text)
        metrics.RECONCILE_CAPPED.inc()
        self.runtime.note("reconciler", text)

    def _lost_feeds(
        self, documents: list[ExecutionDocument], report: ReconcileReport
    ) -> list[Delivery]:
        """Status events of failures whose callbacks never came, read from the status API:
        so a policy's message rules see the error text the callbacks would have carried."""
        failed = [d for d in documents if d.status in FAILED_STATUSES and d.job_id]
        if not failed:
            return []
        with self.runtime.reading() as session:
            latest = latest_event_ms(session, [d.execution_id for d in failed])
        recovered: list[Delivery] = []
        for document in failed:
            run_start = document.timers[-1].start_ms if document.timers else None
            heard = latest.get(document.execution_id)
            if heard is not None and (run_start is None or heard >= run_start):
                continue  # its own feed arrived
            try:
                items = self.client.status_events(
                    document.account_alias or "", document.job_id or "", document.execution_id
                )
            except RunnerError as exc:
                log.warning(
                    "reconciler: status events of %s unavailable: %s", document.execution_id, exc
                )
                continue
            deliveries, skipped = parse_fetched(items)
            if skipped:
                log.warning(
                    "reconciler: %d unreadable status events of %s left out",
                    skipped,
                    document.execution_id,
                )
            recovered.extend(deliveries)
            report.feeds_recovered += 1
        return recovered

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
