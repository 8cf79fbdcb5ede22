"""Prometheus metrics (docs/operations.md, "Metrics" names each one and the alerts to set).

Under `respawn serve` every gunicorn worker of an instance writes its values to the
instance's multiprocess directory (`PROMETHEUS_MULTIPROC_DIR`, set by `respawn serve`), and a
scrape of any worker reads them all: counters are summed over the instance's processes,
gauges as each says (`multiprocess_mode`). Without the directory (tests, `respawn worker`,
the demo) the values are this process's own.
"""

from __future__ import annotations

import os
from typing import Final

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as _multiprocess

MULTIPROC_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE: Final = CONTENT_TYPE_LATEST

# --- the front door -------------------------------------------------------------------------

CALLBACKS = Counter("respawn_callbacks_total", "Callback deliveries by outcome", ["outcome"])
EVENTS_RECEIVED = Counter(
    "respawn_events_received_total",
    "Items of callback bodies by event type (documents: 'document') and outcome "
    "(stored, duplicate, spooled)",
    ["event_type", "outcome"],
)
EVENTS_STORED = Counter("respawn_events_stored_total", "Status events and documents stored")
EVENT_DUPLICATES = Counter("respawn_event_duplicates_total", "Deliveries seen before")
EVENTS_APPLIED = Counter(
    "respawn_events_applied_total", "Stored deliveries applied to their executions"
)
PROCESSING_LAG = Histogram(
    "respawn_processing_lag_seconds",
    "From a callback's arrival to its deliveries applied and decided",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
EVENTS_SPOOLED = Counter(
    "respawn_events_spooled_total", "Deliveries written to the spool while the database was away"
)
SPOOL_DEPTH = Gauge(
    "respawn_spool_depth",
    "Deliveries in the instance's spools, not yet stored",
    multiprocess_mode="livesum",
)

# --- decisions and restarts -----------------------------------------------------------------

DECISIONS = Counter(
    "respawn_decisions_total", "Policy decisions", ["action", "reason_code", "rule"]
)
RESTART_CALLS = Counter(
    "respawn_restart_calls_total", "Restart calls made to the Runner", ["outcome"]
)
RESTARTS_GIVEN_UP = Counter("respawn_restarts_given_up_total", "Restarts abandoned after retries")
HELD_RELEASED = Counter(
    "respawn_held_restarts_released_total",
    "Held restarts let go once their error signature's breaker closed, by what became of them",
    ["outcome"],
)
OUTBOX_DEPTH = Gauge(
    "respawn_outbox_restarts",
    "Restarts waiting in the outbox, by state (pending, held, in_flight)",
    ["state"],
    multiprocess_mode="mostrecent",
)
OUTBOX_OLDEST_DUE_AGE = Gauge(
    "respawn_outbox_oldest_due_age_seconds",
    "How long the oldest due pending restart has been due (0 when none is)",
    multiprocess_mode="mostrecent",
)
BREAKER_OPEN = Gauge(
    "respawn_breaker_open",
    "Open circuit breakers: the fleet's (0 or 1) and error signatures (how many)",
    ["scope"],
    multiprocess_mode="mostrecent",
)
QUARANTINED_HOSTS = Gauge(
    "respawn_quarantined_hosts",
    "Hosts left out of restarts by the per-host limit",
    multiprocess_mode="mostrecent",
)
RECONCILE_CAPPED = Counter(
    "respawn_reconcile_page_cap_total",
    "Reconciler passes that stopped at the page cap before the window's start",
)

# --- the Runner -----------------------------------------------------------------------------

RUNNER_CALL_SECONDS = Histogram(
    "respawn_runner_call_seconds",
    "Runner API calls by operation, answered or not",
    ["operation"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 15, 30),
)
RUNNER_ERRORS = Counter(
    "respawn_runner_errors_total",
    "Runner API calls that failed, by kind (auth, not_found, rejected, unavailable, timeout, "
    "bad_response)",
    ["kind"],
)

NOTIFICATIONS = Counter(
    "respawn_notifications_total",
    "Notification sends by channel and outcome (sent, retry, failed)",
    ["channel", "outcome"],
)

# --- the policy -----------------------------------------------------------------------------

POLICY_STALE = Gauge(
    "respawn_policy_stale",
    "1 when the policy file on disk was refused",
    multiprocess_mode="max",
)
POLICY_RELOADS = Counter(
    "respawn_policy_reloads_total",
    "Policy file edits read, by outcome (loaded, refused)",
    ["outcome"],
)
BLACKOUT_ACTIVE = Gauge(
    "respawn_blackout_active",
    "1 while a blackout window of the policy is active (automatic restarts are deferred)",
    multiprocess_mode="max",
)


def exposition() -> bytes:
    """The text a scrape gets: every process of the instance when it shares a directory."""
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        _multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest(REGISTRY)


def process_gone(pid: int) -> None:
    """A worker exited: its live gauges no longer count (counters keep their totals)."""
    if os.environ.get(MULTIPROC_ENV):
        _multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
