"""Secrets out of everything respawn stores, logs or shows.

The Runner sends secrets in `sshPrivateKey`, `password`, `credentials` and `bearerToken`, at
any depth, and echoes repository credentials back in job answers (docs/runner.md).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

REDACTED = "[redacted]"

_SECRET_KEYS = frozenset(
    {
        "sshprivatekey",
        "privatekey",
        "password",
        "passwd",
        "credentials",
        "bearertoken",
        "token",
        "accesstoken",
        "authorization",
        "secret",
        "apikey",
    }
)
_PEM = re.compile(
    r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?(-----END [A-Z0-9 ]*PRIVATE KEY-----|$)", re.S
)
_BEARER = re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]{8,}")
# The callback URL carries respawn's secret token (access logs, Runner job definitions).
_CALLBACK_TOKEN = re.compile(r"(/callbacks/)[^/\s?\"']+")
# `password=...`, `"sshPrivateKey": "..."` and the like inside free text (exception messages,
# error bodies echoed back): the name stays, the value goes.
_NAMED_SECRET = re.compile(
    r"(?i)((?:ssh_?private_?key|private_?key|password|passwd|bearer_?token|access_?token|"
    r"api_?key|secret|credentials)[\"']?\s*[=:]\s*[\"']?)[^\s\"',;&{}\[\]]+"
)
_MAX_DEPTH = 64


# Cheap substring tests that must hold before a pattern can match (most text has none).
_NAMED_HINTS = ("key", "pass", "token", "secret", "credential")


@lru_cache(maxsize=4096)
def _is_secret_key(key: object) -> bool:
    if not isinstance(key, str):
        return False
    normal = key.replace("_", "").replace("-", "").lower()
    return normal in _SECRET_KEYS or normal.endswith(("password", "privatekey", "secret"))


def redact_text(text: str) -> str:
    """Private keys and bearer tokens out of free text (messages, error bodies, logs)."""
    if "-----BEGIN" in text:
        text = _PEM.sub(REDACTED, text)
    if "/callbacks/" in text:
        text = _CALLBACK_TOKEN.sub(r"\1" + REDACTED, text)
    lowered = text.lower()
    if any(hint in lowered for hint in _NAMED_HINTS):
        text = _NAMED_SECRET.sub(r"\1" + REDACTED, text)
    if "bearer" in lowered:
        text = _BEARER.sub(r"\1" + REDACTED, text)
    return text


def redact(value: Any, _depth: int = 0) -> Any:
    """A copy of a JSON-like value with every secret field replaced by "[redacted]"."""
    if _depth > _MAX_DEPTH:
        return REDACTED
    if isinstance(value, Mapping):
        return {
            str(k): (
                REDACTED if _is_secret_key(k) and v not in (None, "") else redact(v, _depth + 1)
            )
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact(item, _depth + 1) for item in value]
    if isinstance(value, str):
        return redact_text(value)
    return value
