"""Errors clients may see, and how they are rendered: JSON for the API, pages for the UI.

Clients never see exception text from libraries, internals or secrets; logs do, minus secrets.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from flask import Flask, Response, jsonify, render_template, request
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid",
    429: "too_many_requests",
    500: "internal_error",
    503: "unavailable",
}


class AppError(Exception):
    """An error with a status code, a short code and a message fit for the client."""

    status_code = 400
    code = "bad_request"

    def __init__(
        self,
        message: str,
        *,
        fields: Mapping[str, Any] | None = None,
        code: str | None = None,
        status_code: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.fields = dict(fields or {})
        if code is not None:
            self.code = code
        if status_code is not None:
            self.status_code = status_code


class BadRequest(AppError):
    status_code = 400
    code = "malformed"


class Unauthorized(AppError):
    status_code = 401
    code = "unauthorized"


class Forbidden(AppError):
    status_code = 403
    code = "forbidden"


class NotFound(AppError):
    status_code = 404
    code = "not_found"


class Conflict(AppError):
    status_code = 409
    code = "conflict"


class PayloadTooLarge(AppError):
    status_code = 413
    code = "too_large"


class UnsupportedMediaType(AppError):
    status_code = 415
    code = "unsupported_media_type"


class Invalid(AppError):
    status_code = 422
    code = "invalid"


class ServiceUnavailable(AppError):
    status_code = 503
    code = "unavailable"


def error_response(
    status: int, code: str, message: str, fields: Mapping[str, Any] | None = None
) -> Response:
    response = jsonify({"error": code, "message": message, "fields": dict(fields or {})})
    response.status_code = status
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="respawn"'
    return response


def _wants_html() -> bool:
    return request.path.startswith("/admin")


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(AppError)
    def _app_error(exc: AppError) -> Any:
        if _wants_html():
            return (
                render_template("error.html", status=exc.status_code, message=exc.message),
                exc.status_code,
            )
        return error_response(exc.status_code, exc.code, exc.message, exc.fields)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Any:
        status = exc.code or 500
        message = exc.description or "request failed"
        if status == 413:
            message = "request body too large"
        if _wants_html():
            return render_template("error.html", status=status, message=message), status
        return error_response(status, _HTTP_CODES.get(status, "error"), message)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Any:
        log.exception("unhandled error on %s %s", request.method, request.path)
        message = "internal error; the request was not processed"
        if _wants_html():
            return render_template("error.html", status=500, message=message), 500
        return error_response(500, "internal_error", message)
