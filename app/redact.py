"""Secrets out of everything respawn stores, logs or shows.

The Runner sends secrets in `sshPrivateKey`, `password`, `credentials` and `bearerToken`, at
any depth, and echoes repository credentials back in job answers (docs/runner.md).
"""

from __future__ import annotations

import re
import threading
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
    """Private keys, bearer tokens, named secrets and any run of a secret respawn sent out of
    free text (messages, error bodies, logs)."""
    if "-----BEGIN" in text:
        text = _PEM.sub(REDACTED, text)
    if "/callbacks/" in text:
        text = _CALLBACK_TOKEN.sub(r"\1" + REDACTED, text)
    lowered = text.lower()
    if any(hint in lowered for hint in _NAMED_HINTS):
        text = _NAMED_SECRET.sub(r"\1" + REDACTED, text)
    if "bearer" in lowered:
        text = _BEARER.sub(r"\1" + REDACTED, text)
    return KNOWN_SECRETS.scrub(text)


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


# Characters that change how text looks without being seen: C0 and C1 controls, and the
# bidirectional overrides and isolates that can make one name read as another.
_INVISIBLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_INVISIBLE_BUT_LINES = re.compile(
    r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]"
)


def _visible(found: re.Match[str]) -> str:
    code = ord(found.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape_controls(text: str, keep_lines: bool = False) -> str:
    """Control and bidi-override characters written out (`\\n`, `\\u202e`), so a log line
    stays one line and a name shows what it is; `keep_lines` leaves newlines and tabs."""
    pattern = _INVISIBLE_BUT_LINES if keep_lines else _INVISIBLE
    return pattern.sub(_visible, text)


# --- secrets respawn sends, echoed back ------------------------------------------------------

MIN_RUN = 16
"""A run of this many characters of a known secret is scrubbed wherever it turns up."""
_PROBE = 8
_SHORT_MIN = 6
_WHITESPACE = {ord(c): None for c in " \t\r\n\v\f"}


def _normal(text: str) -> str:
    return text.translate(_WHITESPACE).casefold()


class KnownSecrets:
    """The secrets this process sends (SSH keys, the Runner password and token), so that an
    echo of one is scrubbed from everything stored or logged: any run of `MIN_RUN` or more of
    its characters, in any case, with any whitespace or line breaks between them (an answer
    that wraps, spaces, upper-cases or truncates what it was sent). Shorter secrets are
    scrubbed where they appear whole.

    Texts are probed every `_PROBE` characters against the secrets' 8-grams (a 16-character
    run always covers one aligned probe), so text with no secret in it costs little.
    """

    MAX_SECRETS = 256

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._secrets: dict[str, None] = {}
        self._probes: frozenset[str] = frozenset()
        self._runs: frozenset[str] = frozenset()
        self._short: tuple[str, ...] = ()

    def add(self, *secrets: str | None) -> None:
        fresh = [n for s in secrets if s and len(n := _normal(s)) >= _SHORT_MIN]
        with self._lock:
            if all(n in self._secrets for n in fresh):
                return
            for normal in fresh:
                self._secrets.pop(normal, None)
                self._secrets[normal] = None
            while len(self._secrets) > self.MAX_SECRETS:
                self._secrets.pop(next(iter(self._secrets)))
            long = [n for n in self._secrets if len(n) >= MIN_RUN]
            self._probes = frozenset(
                n[i : i + _PROBE] for n in long for i in range(len(n) - _PROBE + 1)
            )
            self._runs = frozenset(
                n[i : i + MIN_RUN] for n in long for i in range(len(n) - MIN_RUN + 1)
            )
            self._short = tuple(n for n in self._secrets if len(n) < MIN_RUN)

    def scrub(self, text: str) -> str:
        probes, short = self._probes, self._short
        if not probes and not short:
            return text
        normal = _normal(text)
        if short:
            for secret in short:
                if secret in normal:
                    text = re.sub(re.escape(secret), REDACTED, text, flags=re.IGNORECASE)
            normal = _normal(text)
        if len(normal) < MIN_RUN or not any(
            normal[i : i + _PROBE] in probes for i in range(0, len(normal) - _PROBE + 1, _PROBE)
        ):
            return text
        return self._scrub_runs(text)

    def _scrub_runs(self, text: str) -> str:
        """Replace every stretch of the text covered by a known run (slow path: a hit)."""
        positions = [i for i, c in enumerate(text) if ord(c) not in _WHITESPACE]
        normal = "".join(text[i] for i in positions).casefold()
        runs = self._runs
        covered = [False] * len(normal)
        for start in range(len(normal) - MIN_RUN + 1):
            if normal[start : start + MIN_RUN] in runs:
                for k in range(start, start + MIN_RUN):
                    covered[k] = True
        pieces: list[str] = []
        last = 0
        k = 0
        while k < len(normal):
            if not covered[k]:
                k += 1
                continue
            end = k
            while end + 1 < len(normal) and covered[end + 1]:
                end += 1
            pieces.append(text[last : positions[k]])
            pieces.append(REDACTED)
            last = positions[end] + 1
            k = end + 1
        pieces.append(text[last:])
        return "".join(pieces)


KNOWN_SECRETS = KnownSecrets()
"""This process's secrets: the Runner client and the SSH key map add to it."""
