"""Standard Webhooks signatures (`webhook-id`, `webhook-timestamp`, `webhook-signature`): the
receiver verifies its callers with them, and notifications are signed the same way."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time

TOLERANCE_SECONDS = 300


class SignatureError(ValueError):
    pass


def _secret_bytes(secret: str) -> bytes:
    raw = secret.removeprefix("whsec_")
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        return raw.encode()


def sign(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header value for a body (used by senders and tests)."""
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    digest = hmac.new(_secret_bytes(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def verify(
    secret: str,
    webhook_id: str | None,
    timestamp: str | None,
    signatures: str | None,
    body: bytes,
    now: float | None = None,
) -> None:
    """Raise SignatureError unless one of the listed v1 signatures matches, in constant time."""
    if not webhook_id or not timestamp or not signatures:
        raise SignatureError("missing webhook signature headers")
    try:
        sent_at = int(timestamp)
    except ValueError:
        raise SignatureError("bad webhook-timestamp") from None
    now = time.time() if now is None else now
    if abs(now - sent_at) > TOLERANCE_SECONDS:
        raise SignatureError("webhook-timestamp outside the allowed window")
    expected = sign(secret, webhook_id, sent_at, body).encode()
    matched = False
    for candidate in signatures.split():
        matched |= hmac.compare_digest(candidate.encode(), expected)
    if not matched:
        raise SignatureError("no valid signature")
