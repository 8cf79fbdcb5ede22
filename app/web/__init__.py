"""The HTTP edge: blueprints that adapt requests to core calls, and the error mapping.

`receiver` takes the Runner's callbacks, `api` is the JSON API, `admin` the operator UI and
`health` the probes and metrics. Views parse and check input, call the core, and render.
"""

from __future__ import annotations

from flask import Flask, Response, redirect
from werkzeug.wrappers import Response as BaseResponse

from app.config import Settings
from app.web.admin import init_admin
from app.web.api.views import bp as api_bp
from app.web.errors import register_error_handlers
from app.web.health.views import bp as health_bp
from app.web.inputs import RowIdConverter, SegmentConverter
from app.web.proxy import TrustedProxyFix, parse_networks
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


def register_web(app: Flask, settings: Settings) -> None:
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

    @app.after_request
    def _security_headers(response: Response) -> Response:
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    @app.get("/")
    def _index() -> BaseResponse:
        return redirect("/admin/")
