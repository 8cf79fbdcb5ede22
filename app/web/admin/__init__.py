"""The operator UI under /admin: login, executions, one execution, overview, policy, actions.

`init_admin` wires Flask-Login and Flask-WTF's CSRF protection. CSRF is checked for the admin
blueprint only: the callback receiver and the JSON API authenticate by token and must accept
POSTs that carry no browser session.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, g
from flask_login import LoginManager

from app.extensions import get_session
from app.web.admin.auth import AdminUser, csrf, load_user
from app.web.admin.format import register_filters
from app.web.admin.views import bp, unauthorized

DEFAULTS: dict[str, Any] = {
    # Failed sign-ins for one name from one address, and from one address for any names,
    # within the window, before that pair or address must wait (app.core.users.Throttle).
    "ADMIN_LOGIN_MAX_PER_NAME": 5,
    "ADMIN_LOGIN_MAX_PER_ADDRESS": 20,
    "ADMIN_LOGIN_WINDOW_SECONDS": 900.0,
    # Every refused login also waits this long (0 in tests, set by init_admin).
    "ADMIN_LOGIN_FAILURE_DELAY": 0.3,
    "ADMIN_PAGE_SIZE": 50,
    "ADMIN_REFRESH_SECONDS": 5,
    # Checked only where the admin blueprint asks; a session-long token, so a page left
    # open overnight can still be used.
    "WTF_CSRF_CHECK_DEFAULT": False,
    "WTF_CSRF_TIME_LIMIT": None,
}


def init_admin(app: Flask) -> None:
    for key, value in DEFAULTS.items():
        app.config.setdefault(key, value)
    if app.testing:
        app.config["ADMIN_LOGIN_FAILURE_DELAY"] = 0.0
    csrf.init_app(app)

    login_manager = LoginManager()
    login_manager.session_protection = "basic"
    login_manager.init_app(app)
    login_manager.user_loader(_load_user)
    login_manager.unauthorized_handler(unauthorized)

    app.register_blueprint(bp)
    register_filters(app)


def _load_user(session_id: str) -> AdminUser | None:
    user = load_user(get_session(), session_id)
    g.admin_user = user
    return user
