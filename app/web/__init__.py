"""The HTTP edge: blueprints that adapt requests to core calls, and the error mapping.

`receiver` takes the Runner's callbacks, `api` is the JSON API, `admin` the operator UI and
`health` the probes and metrics. Views parse and check input, call the core, and render.
"""

from __future__ import annotations

import logging
import re
import time
import uuid

from flask import Flask, Request, Response, g, redirect, request
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface
from werkzeug.wrappers import Response as BaseResponse

from app.config import Settings
from app.logging_setup import REQUEST_ID
from app.redact import redact_text
from app.web.admin import init_admin
from app.web.api.views import bp as api_bp
from app.web.errors import register_error_handlers
from app.web.health.views import bp as health_bp
from app.web.inputs import RowIdConverter, SegmentConverter
from app.web.proxy import TrustedProxyFix, parse_networks
from app.web.receiver.views import CALLBACKS_PATH
from app.web.receiver.views import bp as receiver_bp

# Every answer, whatever produced it (a view, an error page, a 404 or 405 from routing).
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Content-Security-Policy": "; ".join(
        (
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self' data:",
            "connect-src 'self'",
            "form-action 'self'",
            "frame-ancestors 'none'",
            "base-uri 'none'",
            "object-src 'none'",
        )
    ),
}


class SessionInterface(SecureCookieSessionInterface):
    """The admin UI's signed cookie session. The Runner's callbacks carry no cookie and get
    no session: opening and saving one was a tenth of a callback's time in its thread."""

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        if request.path.startswith(CALLBACKS_PATH):
            return self.make_null_session(app)
        return super().open_session(app, request)


_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
requests_log = logging.getLogger("app.web.requests")


def register_web(app: Flask, settings: Settings) -> None:
    app.session_interface = SessionInterface()
    app.url_map.converters["row_id"] = RowIdConverter
    app.url_map.converters["segment"] = SegmentConverter
    app.register_blueprint(receiver_bp)
    app.register_blueprint(api_bp)
    app.register_blueprint(health_bp)
    init_admin(app)
    register_error_handlers(app)
    if settings.trusted_proxies:
        app.wsgi_app = TrustedProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, parse_networks(settings.trusted_proxies), settings.proxy_hops
        )

    @app.before_request
    def _request_id() -> None:
        # A proxy's id is kept when it is a plain token; otherwise one is made up.
        given = request.headers.get("X-Request-Id", "")
        g.request_id = given if _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        g.request_started = time.monotonic()
        REQUEST_ID.set(g.request_id)

    @app.after_request
    def _security_headers(response: Response) -> Response:
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        if "request_id" in g:
            response.headers["X-Request-Id"] = g.request_id
        if settings.log_format == "json":
            _log_request(response)
        return response

    @app.teardown_request
    def _forget_request_id(_: BaseException | None) -> None:
        REQUEST_ID.set(None)

    @app.get("/")
    def _index() -> BaseResponse:
        return redirect("/admin/")


def _log_request(response: Response) -> None:
    """One line per request (JSON logs; gunicorn's access log is off then)."""
    started = g.get("request_started")
    elapsed = (time.monotonic() - started) * 1000 if started is not None else None
    requests_log.info(
        "%s %s %s",
        request.method,
        request.path,
        response.status_code,
        extra={
            "fields": {
                "method": request.method,
                "path": redact_text(request.path),
                "status": response.status_code,
                "duration_ms": round(elapsed, 1) if elapsed is not None else None,
                "client": request.remote_addr,
            }
        },
    )
