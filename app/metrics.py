"""Prometheus metrics. Counters are per process; gunicorn workers each keep their own."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

CALLBACKS = Counter("respawn_callbacks_total", "Callback deliveries by outcome", ["outcome"])
EVENTS_STORED = Counter("respawn_events_stored_total", "Status events and documents stored")
EVENT_DUPLICATES = Counter("respawn_event_duplicates_total", "Deliveries seen before")
DECISIONS = Counter("respawn_decisions_total", "Policy decisions", ["action", "reason_code"])
RESTART_CALLS = Counter(
    "respawn_restart_calls_total", "Restart calls made to the Runner", ["outcome"]
)
RESTARTS_GIVEN_UP = Counter("respawn_restarts_given_up_total", "Restarts abandoned after retries")
POLICY_STALE = Gauge("respawn_policy_stale", "1 when the policy file on disk was refused")
EVENTS_APPLIED = Counter(
    "respawn_events_applied_total", "Stored deliveries applied to their executions"
)
EVENTS_SPOOLED = Counter(
    "respawn_events_spooled_total", "Deliveries written to the spool while the database was away"
)
SPOOL_DEPTH = Gauge("respawn_spool_depth", "Deliveries in this process's spool, not yet stored")
RECONCILE_CAPPED = Counter(
    "respawn_reconcile_page_cap_total",
    "Reconciler passes that stopped at the page cap before the window's start",
)
HELD_RELEASED = Counter(
    "respawn_held_restarts_released_total",
    "Held restarts let go once their error signature's breaker closed, by what became of them",
    ["outcome"],
)
BLACKOUT_ACTIVE = Gauge(
    "respawn_blackout_active",
    "1 while a blackout window of the policy is active (automatic restarts are deferred)",
)
