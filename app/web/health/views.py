"""Liveness, readiness and metrics."""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, Response, jsonify
from sqlalchemy.exc import SQLAlchemyError

from app import metrics as app_metrics
from app import migrate
from app.core.inbox import inbox_counts
from app.core.signatures import open_signatures
from app.core.stats import breaker_view, dispatcher_backlog, quarantined_hosts
from app.db import utcnow
from app.extensions import get_engine, get_runtime, policy_source
from app.policy import ActiveBlackout, blackout_at
from app.web.health.schemas import LivenessSchema, ReadinessSchema
from app.web.openapi import Answer, documented

bp = Blueprint("health", __name__)
log = logging.getLogger(__name__)


HEALTH = "health"
_liveness = LivenessSchema()
_readiness = ReadinessSchema()


@bp.get("/healthz")
@documented("Liveness: the process answers", Answer(200, "alive", LivenessSchema), tag=HEALTH)
def healthz() -> Response:
    return jsonify(_liveness.dump({"status": "ok"}))


def _policy_status() -> dict[str, Any]:
    source = policy_source()
    loaded = source.current()
    body: dict[str, Any] = {
        "state": "stale" if source.is_stale else "ok",
        "version": loaded.version,
        "source": loaded.source,
        "loaded_at": loaded.loaded_at.isoformat(),
    }
    if source.is_stale and source.last_error is not None:
        body["rejected"] = list(source.last_error.messages)
    active = _blackout()
    body["blackout"] = (
        {"name": active.name, "until": active.ends_at.isoformat()} if active else None
    )
    return body


def _blackout() -> ActiveBlackout | None:
    """The policy's blackout window active now, if any: automatic restarts wait for its end."""
    return blackout_at(policy_source().current().policy.schedule, utcnow())


@bp.get("/readyz")
@documented(
    "Readiness: the database answers, the schema is at head, a policy is loaded",
    Answer(200, "ready", ReadinessSchema),
    Answer(503, "not ready; `checks` says why", ReadinessSchema),
    tag=HEALTH,
)
def readyz() -> Response:
    checks: dict[str, Any] = {}
    ready = True
    try:
        engine = get_engine()
        current = migrate.current_revision(engine)
        head = migrate.head_revision()
        checks["database"] = "ok"
        checks["migrations"] = {"current": current, "head": head}
        if current != head:
            ready = False
            checks["migrations"]["state"] = "not at head: run `respawn db upgrade`"
    except SQLAlchemyError:
        log.warning("readiness: database unreachable", exc_info=True)
        checks["database"] = "unreachable"
        ready = False
    checks["policy"] = _policy_status()
    checks["intake"] = _intake_status(checks["database"] == "ok")
    notes = get_runtime().notes
    if notes:
        checks["notes"] = dict(notes)
    response = jsonify(_readiness.dump({"ready": ready, "checks": checks}))
    response.status_code = 200 if ready else 503
    return response


def _intake_status(database_up: bool) -> dict[str, Any]:
    """Callbacks not yet in the database (spooled) or not yet applied (pending, stuck)."""
    runtime = get_runtime()
    status: dict[str, Any] = {"spooled": runtime.intake.spool.depth()}
    if database_up:
        try:
            with runtime.reading() as session:
                status.update(inbox_counts(session))
        except SQLAlchemyError:
            log.warning("readiness: could not count the inbox", exc_info=True)
    return status


@bp.get("/metrics")
@documented(
    "Prometheus metrics of every process of the instance (docs/operations.md)",
    Answer(200, "the text exposition format", {"type": "string"}, media_type="text/plain"),
    tag=HEALTH,
)
def metrics() -> Response:
    runtime = get_runtime()
    app_metrics.SPOOL_DEPTH.set(runtime.intake.spool.depth())
    app_metrics.BLACKOUT_ACTIVE.set(1 if _blackout() is not None else 0)
    _record_gauges()
    return Response(app_metrics.exposition(), mimetype=app_metrics.CONTENT_TYPE)


def _record_gauges() -> None:
    """What the record says now: the outbox, the breakers, quarantined hosts."""
    runtime = get_runtime()
    policy = runtime.current_policy().policy
    now = utcnow()
    try:
        with runtime.reading() as session:
            backlog = dispatcher_backlog(session, now)
            breaker = breaker_view(session, policy, now)
            signatures = [s for s in open_signatures(session, policy, now) if s.open]
            quarantined = quarantined_hosts(session, policy.limits.per_host, now)
    except SQLAlchemyError:
        log.warning("metrics: the database could not be read", exc_info=True)
        return
    for state, count in (
        ("pending", backlog.pending),
        ("held", backlog.held),
        ("in_flight", backlog.in_flight),
    ):
        app_metrics.OUTBOX_DEPTH.labels(state=state).set(count)
    late = (now - backlog.oldest_due).total_seconds() if backlog.oldest_due else 0.0
    app_metrics.OUTBOX_OLDEST_DUE_AGE.set(max(0.0, late))
    app_metrics.BREAKER_OPEN.labels(scope="fleet").set(1 if breaker and breaker.state.open else 0)
    app_metrics.BREAKER_OPEN.labels(scope="signature").set(len(signatures))
    app_metrics.QUARANTINED_HOSTS.set(len(quarantined))
