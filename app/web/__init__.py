"""The HTTP edge: blueprints that adapt requests to core calls, and the error mapping.

`receiver` takes the Runner's callbacks, `api` is the JSON API, `admin` the operator UI and
`health` the probes and metrics. Views parse and check input, call the core, and render.
"""

from __future__ import annotations

from flask import Flask, redirect
from werkzeug.wrappers import Response

from app.web.admin import init_admin
from app.web.api.views import bp as api_bp
from app.web.errors import register_error_handlers
from app.web.health.views import bp as health_bp
from app.web.receiver.views import bp as receiver_bp


def register_web(app: Flask) -> None:
    app.register_blueprint(receiver_bp)
    app.register_blueprint(api_bp)
    app.register_blueprint(health_bp)
    init_admin(app)
    register_error_handlers(app)

    @app.get("/")
    def _index() -> Response:
        return redirect("/admin/")
