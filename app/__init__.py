"""respawn: a webhook receiver with a restart policy for Runner job executions."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Flask

from app import extensions
from app.config import Settings, load_settings
from app.logging_setup import configure_logging
from app.runtime import Runtime
from app.web import register_web


def create_app(config: Mapping[str, Any] | Settings | None = None) -> Flask:
    """Build the app: config, runtime (database and policy), blueprints and errors, logging.

    `config` is a mapping of setting overrides (tests, the demo) or finished Settings. Nothing
    starts in the background here: the entry points that want a dispatcher (`respawn serve`'s
    workers, `respawn worker`, the demo) start it with `app.dispatcher.start_background`.
    """
    app = Flask(__name__, instance_relative_config=True)
    settings = _configure(app, config)
    extensions.init_app(app, Runtime.from_settings(settings))
    register_web(app, settings)
    configure_logging(settings.log_level, settings.log_format)
    return app


def _configure(app: Flask, config: Mapping[str, Any] | Settings | None) -> Settings:
    if isinstance(config, Settings):
        settings = config
    else:
        settings = load_settings(overrides=config, instance_path=app.instance_path)
    app.config.update(
        SECRET_KEY=settings.secret_key,
        # One byte over the limit is read, so a chunked body (no length) that is too large is
        # told from one that fits exactly, and refused with 413 rather than cut short.
        MAX_CONTENT_LENGTH=settings.max_body_bytes + 1,
        TESTING=settings.testing,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.secure_cookies,
        REMEMBER_COOKIE_HTTPONLY=True,
        REMEMBER_COOKIE_SECURE=settings.secure_cookies,
        JSON_SORT_KEYS=False,
        # Requests naming another host are refused (400) before any view sees them, so no
        # redirect is ever built from a host a client made up.
        TRUSTED_HOSTS=list(settings.allowed_hosts) or None,
    )
    return settings
