"""`POST /callbacks/<token>`: the Runner's live status feed."""

from __future__ import annotations

import logging
from functools import cache
from typing import Any

from flask import Blueprint, Response, jsonify, request

from app import metrics
from app import webhooks as signatures
from app.core.deliveries import parse_deliveries
from app.core.errors import Malformed, NotFound
from app.extensions import get_runtime, get_settings
from app.intake.intake import IntakeUnavailable
from app.web.access import token_known
from app.web.errors import (
    PayloadTooLarge,
    ServiceUnavailable,
    Unauthorized,
    UnsupportedMediaType,
)
from app.web.inputs import check_storable, loads_strict
from app.web.openapi import Answer, documented
from app.web.proxy import Network, client_address, in_networks, parse_networks
from app.web.receiver.schemas import CALLBACK_BODY, WEBHOOK_HEADERS, AcceptedSchema

bp = Blueprint("receiver", __name__)
log = logging.getLogger(__name__)


@cache
def callback_networks(values: tuple[str, ...]) -> tuple[Network, ...]:
    return parse_networks(values)


_accepted = AcceptedSchema()

# Beyond the intake's own database timeout: the spool's fsync, the batch ahead of this one.
ANSWER_GRACE = 5.0


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
        body = loads_strict(raw)
        check_storable(body, raw)
    except (ValueError, RecursionError):
        raise Malformed("the body is not valid JSON text") from None
    return body, raw


CALLBACKS_PATH = "/callbacks/"
"""Where the Runner posts: every path under it is a callback."""


@bp.post(CALLBACKS_PATH + "<token>")
@documented(
    "Receive a status event, an execution document, or an array of them",
    Answer(202, "stored, duplicates counted and not stored", AcceptedSchema),
    errors=(400, 401, 404, 413, 415, 422, 503),
    body=CALLBACK_BODY,
    body_required=True,
    headers=WEBHOOK_HEADERS,
    tag="receiver",
)
def receive_callback(token: str) -> Response:
    """The token is one of RESPAWN_CALLBACK_TOKENS: an unknown one is a 404 before the body
    is read. With RESPAWN_WEBHOOK_SECRET, deliveries carry Standard Webhooks signatures."""
    settings = get_settings()
    if settings.callback_allow_from and not in_networks(
        client_address(), callback_networks(settings.callback_allow_from)
    ):
        metrics.CALLBACKS.labels(outcome="not_allowed").inc()
        raise NotFound("no such callback")  # the same answer as a wrong token: nothing to probe
    if not token_known(token, settings.callback_tokens):
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

    try:
        answer = get_runtime().intake.submit(
            deliveries,
            wait_processed=settings.callback_ack == "processed",
            timeout=settings.intake_timeout + ANSWER_GRACE,
        )
    except IntakeUnavailable:
        metrics.CALLBACKS.labels(outcome="unavailable").inc()
        raise ServiceUnavailable("the delivery could not be stored; retry it") from None
    metrics.CALLBACKS.labels(outcome="spooled" if answer.spooled else "accepted").inc()
    response = jsonify(_accepted.dump(answer))
    response.status_code = 202
    return response
