"""JWT-shaped bearer tokens of the simulator: HMAC-signed with a random key, revocable."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from app.simulator.config import SimUser


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class TokenClaims:
    username: str
    account_alias: str
    jti: str
    exp: float


class TokenIssuer:
    """Issues and checks tokens; `revoke_all` makes every token issued so far invalid."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._key = secrets.token_bytes(32)
        self._clock = clock
        self._lock = threading.Lock()
        self._valid: set[str] = set()

    def issue(self, user: SimUser, ttl: float) -> str:
        now = self._clock()
        jti = secrets.token_hex(8)
        header = {"alg": "HS256", "typ": "JWT"}
        payload: dict[str, Any] = {
            "unique_name": user.username,
            "urn:tier3:account-alias": user.account_alias,
            "urn:tier3:location-alias": user.location_alias,
            "role": list(user.roles),
            "iss": "urn:api-tier3",
            "aud": "urn:tier3-users",
            "jti": jti,
            "nbf": int(now),
            "iat": int(now),
            "exp": round(now + ttl, 3),
        }
        signing_input = ".".join(
            _b64(json.dumps(part, separators=(",", ":")).encode()) for part in (header, payload)
        )
        signature = hmac.new(self._key, signing_input.encode("ascii"), hashlib.sha256).digest()
        with self._lock:
            self._valid.add(jti)
        return f"{signing_input}.{_b64(signature)}"

    def check(self, token: str) -> TokenClaims | None:
        """The claims of a valid, unexpired, unrevoked token; None otherwise."""
        parts = token.split(".")
        if len(parts) != 3:
            return None
        try:
            signing_input = f"{parts[0]}.{parts[1]}".encode("ascii")
            signature = _unb64(parts[2])
            payload = json.loads(_unb64(parts[1]))
        except ValueError:  # also UnicodeError and binascii.Error
            return None
        expected = hmac.new(self._key, signing_input, hashlib.sha256).digest()
        if not hmac.compare_digest(signature, expected) or not isinstance(payload, dict):
            return None
        exp = payload.get("exp")
        jti = payload.get("jti")
        if not isinstance(exp, int | float) or not isinstance(jti, str):
            return None
        if self._clock() >= exp:
            return None
        with self._lock:
            if jti not in self._valid:
                return None
        return TokenClaims(
            str(payload.get("unique_name")),
            str(payload.get("urn:tier3:account-alias")),
            jti,
            float(exp),
        )

    def revoke_all(self) -> int:
        with self._lock:
            count = len(self._valid)
            self._valid.clear()
        return count

    @property
    def active(self) -> int:
        with self._lock:
            return len(self._valid)
