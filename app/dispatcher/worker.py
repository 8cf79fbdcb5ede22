"""The dispatcher and reconciler loops: threads in a web process, or `respawn worker`."""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import islice

import requests
from flask import Flask
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from app.config import Settings
from app.db import get_engine, transaction, utcnow
from app.decisions import current_policy, decide_failed_runs, undecided_failures
from app.dispatcher.services import (
    RetryPolicy,
    claim_due_restarts,
    record_result,
    send_restart,
)
from app.documents import ExecutionDocument
from app.models import Execution, Job
from app.receiver.services import record_documents
from app.runner.client import RunnerClient
from app.runner.errors import RunnerError
from app.settings import get_settings

log = logging.getLogger(__name__)

JOB_REFRESH_BATCH = 50
JOB_REFRESH_INTERVAL = 3.0


def make_runner_client(settings: Settings) -> RunnerClient | None:
    """The Runner client from the settings, or None when no credentials are configured."""
    if not settings.runner_configured:
        return None
    session = requests.Session()
    session.headers["User-Agent"] = "respawn"
    return RunnerClient(
        session,
        settings.runner_api_url,
        settings.runner_auth_url,
        settings.runner_username,
        settings.runner_password,
        token=settings.runner_token,
        connect_timeout=settings.runner_connect_timeout,
        read_timeout=settings.runner_read_timeout,
    )


def worker_name() -> str:
    return f"{socket.gethostname()[:32]}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Dispatcher:
    """Claims due restarts one at a time and carries each out."""

    def __init__(self, app: Flask, client: RunnerClient, name: str | None = None) -> None:
        self.app = app
        self.client = client
        self.name = name or worker_name()
        self.settings = get_settings(app)
        self.retry = RetryPolicy(
            self.settings.max_send_attempts,
            self.settings.retry_base_seconds,
            self.settings.uncertain_retry_seconds,
        )
        self._wake = threading.Event()

    def wake(self) -> None:
        self._wake.set()

    def run_once(self) -> int:
        """Claim and carry out due restarts until none is due; return how many were handled."""
        handled = 0
        while True:
            with transaction(self.app) as session:
                claims = claim_due_restarts(
                    session, self.name, utcnow(), self.settings.lease_seconds, 1
                )
            if not claims:
                return handled
            for claim in claims:
                result = send_restart(
                    self.client,
                    claim,
                    self.settings.ssh_keys_file,
                    self.settings.runner_call_seconds,
                )
                with transaction(self.app) as session:
                    state = record_result(session, claim, self.name, result, utcnow(), self.retry)
                log.info(
                    "restart %s of %s: %s (%s)",
                    claim.restart_id,
                    claim.execution_id,
                    result.outcome,
                    state,
                )
                handled += 1

    def run_forever(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.run_once()
            except SQLAlchemyError:
                log.exception("dispatcher: database error; retrying shortly")
            except Exception:
                log.exception("dispatcher: unexpected error; retrying shortly")
            self._wake.wait(self.settings.dispatch_interval)
            self._wake.clear()


@dataclass
class ReconcileReport:
    accounts: int = 0
    documents: int = 0
    stored: int = 0
    restarts_queued: int = 0
    errors: list[str] = field(default_factory=list)


class Reconciler:
    """Pages through the Runner's executions so a lost callback is not a missed failure."""

    def __init__(self, app: Flask, client: RunnerClient) -> None:
        self.app = app
        self.client = client
        self.settings = get_settings(app)
        self.on_queued: Callable[[], None] | None = None

    def _accounts(self) -> list[str]:
        with transaction(self.app) as session:
            seen = set(
                session.scalars(
                    select(Execution.account_alias).where(Execution.account_alias != "").distinct()
                )
            )
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
            with transaction(self.app) as session:
                now = utcnow()
                result = record_documents(session, documents, now)
                decided = decide_failed_runs(
                    session,
                    result.executions.values(),
                    now,
                    current_policy(self.app).policy,
                    defer_unknown_jobs=True,
                )
            report.stored += result.accepted
            report.restarts_queued += decided.queued
        self.refresh_jobs(report)
        report.restarts_queued += self.decide_undecided()
        self._refresh_statistics()
        if report.restarts_queued and self.on_queued is not None:
            self.on_queued()
        return report

    def _refresh_statistics(self) -> None:
        """SQLite keeps its planner statistics current only when asked (cheap when fresh)."""
        engine = get_engine(self.app)
        if engine.dialect.name == "sqlite":
            with engine.begin() as connection:
                connection.exec_driver_sql("PRAGMA optimize")

    def decide_undecided(self) -> int:
        """Decide failures left for later (their job was unknown); return restarts queued."""
        with transaction(self.app) as session:
            pending = undecided_failures(session)
            if not pending:
                return 0
            decided = decide_failed_runs(
                session,
                pending,
                utcnow(),
                current_policy(self.app).policy,
                defer_unknown_jobs=True,
            )
        return decided.queued

    def refresh_jobs(self, report: ReconcileReport) -> None:
        """Fetch job records respawn has not seen yet (their descriptions feed job globs)."""
        with transaction(self.app) as session:
            known = select(Job.job_id)
            missing = list(
                session.execute(
                    select(Execution.account_alias, Execution.job_id)
                    .where(Execution.job_id != "", Execution.job_id.not_in(known))
                    .group_by(Execution.account_alias, Execution.job_id)
                    .limit(JOB_REFRESH_BATCH)
                )
            )
        fetched: list[Job] = []
        for account, job_id in missing:
            try:
                description = self.client.get_job(account, job_id).description
                error = None
            except RunnerError as exc:
                description, error = None, str(exc)[:255]
            fetched.append(
                Job(
                    job_id=job_id,
                    account_alias=account,
                    description=description,
                    fetched_at=utcnow(),
                    fetch_error=error,
                )
            )
        if fetched:
            with transaction(self.app) as session:
                for row in fetched:
                    session.merge(row)

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


class Background:
    """The dispatcher, reconciler and job-refresh threads of one process."""

    def __init__(
        self, app: Flask, client: RunnerClient, dispatchers: int = 1, reconcile: bool = True
    ) -> None:
        self.stop_event = threading.Event()
        self.dispatchers = [Dispatcher(app, client) for _ in range(dispatchers)]
        self.reconciler = Reconciler(app, client) if reconcile else None
        if self.reconciler is not None:
            self.reconciler.on_queued = self.wake_dispatchers
        self.refresh_wake = threading.Event()
        self.threads: list[threading.Thread] = []

    def wake(self) -> None:
        self.refresh_wake.set()
        self.wake_dispatchers()

    def wake_dispatchers(self) -> None:
        for dispatcher in self.dispatchers:
            dispatcher.wake()

    def start(self) -> None:
        for n, dispatcher in enumerate(self.dispatchers):
            self._spawn(f"respawn-dispatcher-{n}", dispatcher.run_forever)
        if self.reconciler is not None:
            reconciler = self.reconciler
            self._spawn("respawn-reconciler", reconciler.run_forever)
            self._spawn(
                "respawn-job-refresh",
                lambda stop: refresh_jobs_forever(
                    reconciler, stop, self.refresh_wake, JOB_REFRESH_INTERVAL
                ),
            )

    def _spawn(self, name: str, target: Callable[[threading.Event], None]) -> None:
        thread = threading.Thread(target=target, args=(self.stop_event,), name=name, daemon=True)
        thread.start()
        self.threads.append(thread)

    def stop(self, timeout: float = 15.0) -> None:
        self.stop_event.set()
        self.wake()
        for thread in self.threads:
            thread.join(timeout)


def start_background(app: Flask, dispatchers: int = 1, reconcile: bool = True) -> Background | None:
    """Start this process's dispatcher (and reconciler) threads, if a Runner is configured."""
    settings = get_settings(app)
    client = make_runner_client(settings)
    if client is None:
        log.warning(
            "no Runner credentials (RESPAWN_RUNNER_TOKEN or USERNAME/PASSWORD): "
            "restarts are decided and queued but not sent"
        )
        return None
    background = Background(app, client, dispatchers, reconcile)
    app.extensions["respawn.wake_background"] = background.wake
    app.extensions["respawn.stop_background"] = background.stop
    background.start()
    return background
