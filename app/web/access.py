"""Token checks shared by the callback receiver and the JSON API."""

from __future__ import annotations

import hmac


def token_known(token: str, candidates: tuple[str, ...]) -> bool:
    """Whether `token` is one of `candidates`, compared in constant time (all of them)."""
    known = False
    for candidate in candidates:
        known |= hmac.compare_digest(token.encode(), candidate.encode())
    return known
