"""respawn: a webhook receiver with a restart policy for Runner job executions."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Flask, redirect
from werkzeug.wrappers import Response

from app import db
from app.config import Settings, load_settings
from app.errors import register_error_handlers
from app.logging_setup import configure_logging


def create_app(config: Mapping[str, Any] | Settings | None = None) -> Flask:
    """Build the app: config, database, policy, blueprints, error handlers, CLI, logging.

    `config` is a mapping of setting overrides (tests, the demo) or finished Settings.
    """
    app = Flask(__name__, instance_relative_config=True)
    settings = _configure(app, config)
    db.init_app(app, settings.database_url)
    _init_policy(app, settings)
    _register_blueprints(app)
    register_error_handlers(app)
    _register_cli(app)
    configure_logging(settings.log_level)
    _start_background(app, settings)
    return app


def _configure(app: Flask, config: Mapping[str, Any] | Settings | None) -> Settings:
    if isinstance(config, Settings):
        settings = config
    else:
        settings = load_settings(overrides=config, instance_path=app.instance_path)
    app.extensions["respawn.settings"] = settings
    app.config.update(
        SECRET_KEY=settings.secret_key,
        MAX_CONTENT_LENGTH=settings.max_body_bytes,
        TESTING=settings.testing,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.secure_cookies,
        REMEMBER_COOKIE_HTTPONLY=True,
        REMEMBER_COOKIE_SECURE=settings.secure_cookies,
        JSON_SORT_KEYS=False,
    )
    return settings


def _init_policy(app: Flask, settings: Settings) -> None:
    from app.policy_source import PolicySource

    app.extensions["respawn.policy"] = PolicySource(
        settings.policy_file, check_interval=settings.policy_check_interval
    )


def _register_blueprints(app: Flask) -> None:
    from app.admin import init_admin
    from app.api.views import bp as api_bp
    from app.health.views import bp as health_bp
    from app.receiver.views import bp as receiver_bp

    app.register_blueprint(receiver_bp)
    app.register_blueprint(api_bp)
    app.register_blueprint(health_bp)
    init_admin(app)

    @app.get("/")
    def _index() -> Response:
        return redirect("/admin/")


def _register_cli(app: Flask) -> None:
    from app.cli import register_app_commands

    register_app_commands(app)


def _start_background(app: Flask, settings: Settings) -> None:
    """The embedded dispatcher starts in the web process unless turned off (tests do)."""
    return None
