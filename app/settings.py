"""Access to the running app's settings."""

from __future__ import annotations

import hmac

from flask import Flask, current_app

from app.config import Settings


def token_known(token: str, candidates: tuple[str, ...]) -> bool:
    """Whether `token` is one of `candidates`, compared in constant time (all of them)."""
    known = False
    for candidate in candidates:
        known |= hmac.compare_digest(token.encode(), candidate.encode())
    return known


def get_settings(app: Flask | None = None) -> Settings:
    settings: Settings = (app or current_app).extensions["respawn.settings"]
    return settings
