"""Typed failures of Runner calls, with short messages that never carry a secret.

Each error says what happened (auth refused, not found, refused in this state, service
unavailable, timeout, bad answer), the HTTP status when there was one, and, for the
dispatcher, whether the request may have reached the Runner (`sent`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from app.redact import REDACTED, redact, redact_text

MAX_MESSAGE_CHARS = 300

# A JWT (header.payload.signature), and long runs of base64 (an SSH key sent base64-encoded
# and echoed back); neither belongs in a message whether or not we know the exact value.
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")
_LONG_BASE64 = re.compile(r"[A-Za-z0-9+/]{64,}={0,2}")
_TAGS = re.compile(r"<[^>]{0,500}>")
_SPACES = re.compile(r"\s+")


class RunnerError(Exception):
    """A Runner call failed.

    `status_code` is the HTTP status when the Runner answered, `message` a short human
    text taken from its answer, and `sent` is False only when the request surely never
    reached the Runner (the connection was not established).
    """

    kind = "error"

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        operation: str | None = None,
        sent: bool = True,
    ) -> None:
        self.message = _bound(scrub(message))
        self.status_code = status_code
        self.operation = operation
        self.sent = sent
        super().__init__(self._describe())

    def _describe(self) -> str:
        parts = []
        if self.operation:
            parts.append(self.operation)
        if self.status_code is not None:
            parts.append(f"HTTP {self.status_code}")
        head = " ".join(parts)
        return f"{head}: {self.message}" if head else self.message

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(status_code={self.status_code!r}, "
            f"message={self.message!r}, sent={self.sent!r})"
        )


class RunnerAuthError(RunnerError):
    """Credentials or token refused (401/403, or the login answered 400)."""

    kind = "auth"


class RunnerNotFound(RunnerError):
    """The account, job or execution does not exist (404)."""

    kind = "not_found"


class RunnerRejected(RunnerError):
    """The Runner refused the request as it stands (400/409/422), e.g. not restartable now."""

    kind = "rejected"


class RunnerUnavailable(RunnerError):
    """5xx, 429, a refused or dropped connection. `sent=False`: the request never left."""

    kind = "unavailable"


class RunnerTimeout(RunnerError):
    """No answer in time after the request was sent: it may have been applied."""

    kind = "timeout"


class RunnerBadResponse(RunnerError):
    """The Runner answered something that cannot be understood."""

    kind = "bad_response"


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """Text with the given secret values, private keys, tokens and long base64 runs removed."""
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    text = redact_text(text)
    text = _JWT.sub(REDACTED, text)
    return _LONG_BASE64.sub(_redact_base64, text)


def _redact_base64(match: re.Match[str]) -> str:
    run = match.group(0)
    mixed = any(c.isupper() for c in run) and any(c.islower() for c in run)
    return REDACTED if mixed and any(c.isdigit() for c in run) else run


def _bound(text: str) -> str:
    text = _SPACES.sub(" ", text).strip()
    if len(text) > MAX_MESSAGE_CHARS:
        text = text[: MAX_MESSAGE_CHARS - 1].rstrip() + "…"
    return text


def _join(parts: Iterable[str]) -> str:
    return "; ".join(p for p in parts if p)


def _texts(value: Any) -> list[str]:
    """The message strings inside one error item (a string, an object, a list)."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, int | float | bool):
        return [str(value)]
    if isinstance(value, Mapping):
        return [_message_of(value)]
    if isinstance(value, list):
        return [text for item in value for text in _texts(item)]
    return []


def _model_state(state: Any) -> str:
    if not isinstance(state, Mapping):
        return _join(_texts(state))
    parts = []
    for key, value in state.items():
        messages = _join(_texts(value))
        if messages:
            parts.append(f"{key}: {messages}" if key else messages)
    return _join(parts)


def _message_of(body: Any) -> str:
    """The human text of a decoded error body, in the shapes clients of the Runner met."""
    if isinstance(body, list):
        return _join(text for item in body for text in _texts(item))
    if not isinstance(body, Mapping):
        return _join(_texts(body))
    parts: list[str] = []
    for key in ("message", "Message", "error_description", "error", "detail", "title"):
        if key in body:
            text = _join(_texts(body[key]))
            if text and text not in parts:
                parts.append(text)
    state = body.get("modelState", body.get("ModelState"))
    if state:
        detail = _model_state(state)
        if detail:
            parts.append(f"({detail})" if parts else detail)
    if "errors" in body and not parts:
        parts.append(_join(_texts(body["errors"])))
    return " ".join(p for p in parts if p)


def message_from_body(
    body: bytes | str, content_type: str = "", secrets: Iterable[str] = ()
) -> str:
    """A short, secret-free message from an error answer of any shape."""
    if isinstance(body, bytes):
        body = body[:65536].decode("utf-8", errors="replace")
    text = ""
    stripped = body.strip()
    if stripped[:1] in ("{", "[", '"'):
        try:
            decoded = json.loads(stripped)
        except ValueError:
            decoded = None
        else:
            text = _message_of(redact(decoded))
            if not text:
                text = json.dumps(redact(decoded))
    if not text:
        text = stripped
        if "html" in content_type.lower() or stripped[:1] == "<":
            text = _TAGS.sub(" ", text)
    return _bound(scrub(text, secrets)) or "(empty answer)"
