"""Details of talking HTTP to the Runner: ids as path segments, the token's expiry, and
whether a failed connection surely sent nothing."""

from __future__ import annotations

import base64
import binascii
import json
from urllib.parse import quote

import requests
from urllib3.exceptions import ConnectTimeoutError, MaxRetryError, NewConnectionError

from app.runner.errors import RunnerRejected


def jwt_expiry(token: str) -> float | None:
    """The `exp` claim (epoch seconds) of a JWT-shaped token, or None when it does not decode."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload.encode("ascii")))
    except (ValueError, binascii.Error, UnicodeError):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    if isinstance(exp, int | float) and not isinstance(exp, bool):
        return float(exp)
    return None


def segment(value: str) -> str:
    """One path segment, every reserved character encoded, so no id can make the request's
    path step to another resource. `.` and `..` cannot be sent at all: the HTTP stack
    decodes `%2E` and resolves dot segments, so they are refused before any request."""
    text = str(value)
    if text in (".", ".."):
        raise RunnerRejected(f"{text!r} cannot name a Runner resource", sent=False)
    return quote(text, safe="")


def connection_never_made(exc: requests.ConnectionError) -> bool:
    """True when the connection was not established, so the request surely was not sent."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    reason = exc.args[0] if exc.args else None
    if isinstance(reason, MaxRetryError):
        reason = reason.reason
    return isinstance(reason, NewConnectionError | ConnectTimeoutError)
