"""`POST /callbacks/<token>`: the Runner's live status feed."""

from __future__ import annotations

import json
import logging
from typing import Any

from flask import Blueprint, Response, jsonify, request
from sqlalchemy.exc import IntegrityError, OperationalError

from app import metrics
from app.core.errors import Malformed, NotFound
from app.core.ingest import ingest_and_decide, parse_deliveries
from app.db import utcnow
from app.extensions import current_policy, get_session, get_settings, wake_dispatcher
from app.web.access import token_known
from app.web.errors import (
    PayloadTooLarge,
    ServiceUnavailable,
    Unauthorized,
    UnsupportedMediaType,
)
from app.web.receiver import signatures

bp = Blueprint("receiver", __name__)
log = logging.getLogger(__name__)

_WRITE_ATTEMPTS = 3


def _reject_constant(value: str) -> Any:
    raise ValueError(value)


def _check_storable(body: Any) -> None:
    """Refuse text no database can store: NUL characters and lone surrogates (\\ud800)."""
    stack = [body]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
        elif isinstance(value, str):
            if "\x00" in value:
                raise ValueError("NUL character")
            value.encode("utf-8")  # raises UnicodeEncodeError (a ValueError) on surrogates


def _read_json_body() -> tuple[Any, bytes]:
    settings = get_settings()
    mimetype = request.mimetype or ""
    if mimetype != "application/json" and not mimetype.endswith("+json"):
        raise UnsupportedMediaType("send the body as application/json")
    if request.content_length is not None and request.content_length > settings.max_body_bytes:
        raise PayloadTooLarge(f"body larger than {settings.max_body_bytes} bytes")
    raw = request.get_data(cache=False)
    if len(raw) > settings.max_body_bytes:
        raise PayloadTooLarge(f"body larger than {settings.max_body_bytes} bytes")
    try:
        body = json.loads(raw, parse_constant=_reject_constant)
        _check_storable(body)
    except (ValueError, RecursionError):
        raise Malformed("the body is not valid JSON text") from None
    return body, raw


@bp.post("/callbacks/<token>")
def receive_callback(token: str) -> Response:
    if not token_known(token, get_settings().callback_tokens):
        metrics.CALLBACKS.labels(outcome="unknown_token").inc()
        raise NotFound("no such callback")
    body, raw = _read_json_body()
    settings = get_settings()
    webhook_id = request.headers.get("webhook-id")
    if settings.webhook_secret:
        try:
            signatures.verify(
                settings.webhook_secret,
                webhook_id,
                request.headers.get("webhook-timestamp"),
                request.headers.get("webhook-signature"),
                raw,
            )
        except signatures.SignatureError as exc:
            metrics.CALLBACKS.labels(outcome="bad_signature").inc()
            raise Unauthorized(str(exc), code="bad_signature") from None
    deliveries = parse_deliveries(body, webhook_id, settings.max_batch_items)

    # With a Runner to ask, a failure of a job not fetched yet is decided by the background
    # (embedded or `respawn worker`) once the job's description is known: job globs may be
    # meant for it.
    defer = settings.runner_configured
    policy = current_policy().policy
    session = get_session()
    for attempt in range(1, _WRITE_ATTEMPTS + 1):
        try:
            with session.begin():
                ingested = ingest_and_decide(
                    session, deliveries, utcnow(), policy, defer_unknown_jobs=defer
                )
            break
        except IntegrityError:
            # A concurrent delivery of the same event or execution won the insert; run again
            # and this one is seen as the duplicate it is.
            session.rollback()
            if attempt == _WRITE_ATTEMPTS:
                log.warning("callback write kept conflicting; giving up")
                raise ServiceUnavailable("busy; retry the delivery") from None
        except OperationalError:
            session.rollback()
            log.exception("database unavailable while recording a callback")
            raise ServiceUnavailable("database unavailable; retry the delivery") from None
    if ingested.decided.queued or ingested.decided.deferred:
        wake_dispatcher()
    result = ingested.stored
    metrics.CALLBACKS.labels(outcome="accepted").inc()
    metrics.EVENTS_STORED.inc(result.accepted)
    metrics.EVENT_DUPLICATES.inc(result.duplicates)
    response = jsonify({"accepted": result.accepted, "duplicates": result.duplicates})
    response.status_code = 202
    return response
