"""The operator UI under /admin: login, executions, one execution, overview, policy, actions.

`init_admin` wires Flask-Login and Flask-WTF's CSRF protection. CSRF is checked for the admin
blueprint only: the callback receiver and the JSON API authenticate by token and must accept
POSTs that carry no browser session.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable
from typing import Any

from flask import Flask, g
from flask_login import LoginManager
from flask_wtf.csrf import CSRFProtect

from app.admin.services import (
    AddressThrottle,
    AdminUser,
    human_duration,
    load_user,
    relative_time,
)
from app.db import get_session, utcnow

csrf = CSRFProtect()

DEFAULTS: dict[str, Any] = {
    # Failed logins in a row before an account is locked, and the first lock's length.
    "ADMIN_LOGIN_MAX_FAILURES": 5,
    "ADMIN_LOGIN_LOCK_SECONDS": 30.0,
    # Every refused login also waits this long (0 in tests, set by init_admin).
    "ADMIN_LOGIN_FAILURE_DELAY": 0.3,
    # Failed logins from one address (any user names) within the window before it must wait.
    "ADMIN_LOGIN_MAX_PER_ADDRESS": 20,
    "ADMIN_LOGIN_ADDRESS_WINDOW": 600.0,
    "ADMIN_PAGE_SIZE": 50,
    "ADMIN_REFRESH_SECONDS": 5,
    # Checked only where the admin blueprint asks; a session-long token, so a page left
    # open overnight can still be used.
    "WTF_CSRF_CHECK_DEFAULT": False,
    "WTF_CSRF_TIME_LIMIT": None,
}


def init_admin(app: Flask) -> None:
    from app.admin.views import bp, unauthorized

    for key, value in DEFAULTS.items():
        app.config.setdefault(key, value)
    if app.testing:
        app.config["ADMIN_LOGIN_FAILURE_DELAY"] = 0.0
    csrf.init_app(app)
    app.extensions["respawn.login_throttle"] = AddressThrottle(
        int(app.config["ADMIN_LOGIN_MAX_PER_ADDRESS"]),
        float(app.config["ADMIN_LOGIN_ADDRESS_WINDOW"]),
    )

    login_manager = LoginManager()
    login_manager.session_protection = "basic"
    login_manager.init_app(app)
    login_manager.user_loader(_load_user)
    login_manager.unauthorized_handler(unauthorized)

    app.register_blueprint(bp)
    filters: dict[str, Callable[..., Any]] = {
        "utc": format_utc,
        "iso": format_iso,
        "ago": format_ago,
        "duration": human_duration,
        "short": short_id,
        "pretty_json": pretty_json,
    }
    for name, function in filters.items():
        app.add_template_filter(function, name)


def _load_user(session_id: str) -> AdminUser | None:
    user = load_user(get_session(), session_id)
    g.admin_user = user
    return user


# --- template filters ---------------------------------------------------------------------


def _utc(value: dt.datetime) -> dt.datetime:
    return value.astimezone(dt.UTC) if value.tzinfo else value.replace(tzinfo=dt.UTC)


def format_utc(value: dt.datetime | None, seconds: bool = True) -> str:
    if value is None:
        return "—"
    return _utc(value).strftime("%Y-%m-%d %H:%M:%S UTC" if seconds else "%Y-%m-%d %H:%M UTC")


def format_iso(value: dt.datetime | None) -> str:
    if value is None:
        return ""
    return _utc(value).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def format_ago(value: dt.datetime | None) -> str:
    return relative_time(value, utcnow())


_HEX = re.compile(r"^[0-9a-f]{12,}$")
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


def short_id(value: str | None, length: int = 8) -> str:
    """A UUID's first block (as git shortens hashes); other names unless they are long."""
    if not value:
        return "—"
    if _UUID.match(value) or _HEX.match(value):
        return value[:length]
    return value if len(value) <= 24 else value[:23] + "…"


MAX_PAYLOAD_CHARS = 20_000


def pretty_json(value: Any) -> str:
    text = json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)
    if len(text) > MAX_PAYLOAD_CHARS:
        text = text[:MAX_PAYLOAD_CHARS] + f"\n… ({len(text) - MAX_PAYLOAD_CHARS} more characters)"
    return text  # autoescaped by Jinja
