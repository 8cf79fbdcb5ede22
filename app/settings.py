"""Access to the running app's settings."""

from __future__ import annotations

from flask import Flask, current_app

from app.config import Settings


def get_settings(app: Flask | None = None) -> Settings:
    settings: Settings = (app or current_app).extensions["respawn.settings"]
    return settings
