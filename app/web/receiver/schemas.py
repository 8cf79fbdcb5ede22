"""The receiver's answer; its bodies are the Runner's shapes (`app.runner.documents`)."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, fields

from app.runner.documents import ExecutionDocumentSchema, StatusEventSchema


class AcceptedSchema(Schema):
    accepted = fields.Integer(metadata={"description": "deliveries stored"})
    duplicates = fields.Integer(metadata={"description": "deliveries already known, not stored"})


_ONE: list[Any] = [StatusEventSchema, ExecutionDocumentSchema]

CALLBACK_BODY: dict[str, Any] = {
    "description": "a status event (has `event_type`), an execution document, or an array of "
    "either (at most RESPAWN_MAX_BATCH_ITEMS); unknown fields are kept",
    "anyOf": [
        *_ONE,
        {"type": "array", "minItems": 1, "items": {"anyOf": _ONE}},
    ],
}

WEBHOOK_HEADERS = (
    {
        "name": "webhook-id",
        "schema": {"type": "string"},
        "description": "the delivery's id (Standard Webhooks): a repeat is a duplicate",
    },
    {
        "name": "webhook-timestamp",
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
        "description": "epoch seconds; required, within 5 minutes, with RESPAWN_WEBHOOK_SECRET",
    },
    {
        "name": "webhook-signature",
        "schema": {"type": "string"},
        "description": "`v1,<base64 HMAC-SHA256>`; required with RESPAWN_WEBHOOK_SECRET",
    },
)
