"""Errors as clients see them: JSON for the API and the receiver, pages for the admin UI.

The one place where failures become HTTP answers: domain errors (`app.core.errors`) are mapped
to their status codes here, and the web layer's own refusals (authentication, size, media type,
availability) are `HTTPError`s. Clients never see exception text from libraries, internals or
secrets; logs do, minus secrets.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from flask import Flask, Response, jsonify, render_template, request
from marshmallow import Schema, fields
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from werkzeug.exceptions import HTTPException, SecurityError

from app.core.errors import Conflict, DomainError, Invalid, Malformed, NotFound

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

DOMAIN_STATUS: dict[type[DomainError], int] = {
    Malformed: 400,
    NotFound: 404,
    Conflict: 409,
    Invalid: 422,
}


class ErrorSchema(Schema):
    """Every error answer of the API and the receiver (the admin UI shows a page instead)."""

    error = fields.String(
        required=True, metadata={"description": "a short code, e.g. `invalid`, `not_found`"}
    )
    message = fields.String(required=True, metadata={"description": "for people; may change"})
    field_messages = fields.Dict(
        keys=fields.String(),
        required=True,
        attribute="fields",
        data_key="fields",
        metadata={
            "description": "field name -> its messages (for an array, keyed by item index); "
            "`_schema` for the body as a whole"
        },
    )


_ERROR = ErrorSchema()


class HTTPError(Exception):
    """A refusal that only exists at the HTTP edge: a status, a short code, a message."""

    status_code = 400
    code = "bad_request"

    def __init__(
        self,
        message: str,
        *,
        fields: Mapping[str, Any] | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.fields = dict(fields or {})
        if code is not None:
            self.code = code


class Unauthorized(HTTPError):
    status_code = 401
    code = "unauthorized"


class Forbidden(HTTPError):
    status_code = 403
    code = "forbidden"


class PayloadTooLarge(HTTPError):
    status_code = 413
    code = "too_large"


class UnsupportedMediaType(HTTPError):
    status_code = 415
    code = "unsupported_media_type"


class TooManyRequests(HTTPError):
    status_code = 429
    code = "too_many_requests"


class ServiceUnavailable(HTTPError):
    status_code = 503
    code = "unavailable"


def status_of(exc: DomainError) -> int:
    for kind in type(exc).__mro__:
        if kind in DOMAIN_STATUS:
            return DOMAIN_STATUS[kind]
    return 400


def error_response(
    status: int, code: str, message: str, field_messages: Mapping[str, Any] | None = None
) -> Response:
    response = jsonify(
        _ERROR.dump({"error": code, "message": message, "fields": dict(field_messages or {})})
    )
    response.status_code = status
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="respawn"'
    return response


def _wants_html() -> bool:
    return request.path.startswith("/admin")


def _answer(status: int, code: str, message: str, fields: Mapping[str, Any]) -> Any:
    if _wants_html():
        return render_template("error.html", status=status, message=message), status
    return error_response(status, code, message, fields)


DATABASE_AWAY = (OperationalError, InterfaceError, PoolTimeout)
"""The database did not answer: refused, gone, locked past its timeout, or no pooled
connection free in time. A retry may succeed; nothing was changed."""

RETRY_AFTER = "5"
"""Seconds a client is asked to wait before retrying an `unavailable` answer."""


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(DomainError)
    def _domain_error(exc: DomainError) -> Any:
        return _answer(status_of(exc), exc.code, exc.message, exc.fields)

    @app.errorhandler(HTTPError)
    def _http_error(exc: HTTPError) -> Any:
        return _answer(exc.status_code, exc.code, exc.message, exc.fields)

    @app.errorhandler(HTTPException)
    def _werkzeug_error(exc: HTTPException) -> Any:
        status = exc.code or 500
        message = exc.description or "request failed"
        if status == 413:
            message = "request body too large"
        if isinstance(exc, SecurityError):
            # A Host this service does not answer to: no page can be built for it (its links
            # would name that host), so a plain answer.
            return error_response(400, "bad_host", "this service does not answer to that host")
        return _answer(status, _HTTP_CODES.get(status, "error"), message, {})

    @app.errorhandler(OperationalError)
    @app.errorhandler(InterfaceError)
    @app.errorhandler(PoolTimeout)
    def _database_away(exc: Exception) -> Any:
        # The library's text can name the server and the statement: it goes to the log (which
        # redacts secrets), never to the client; no stack trace, this is not a bug.
        log.warning(
            "database unavailable on %s %s: %s",
            request.method,
            request.path,
            str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
        )
        response = app.make_response(
            _answer(503, "unavailable", "the database is unavailable; nothing was changed", {})
        )
        response.headers["Retry-After"] = RETRY_AFTER
        return response

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Any:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return _answer(500, "internal_error", "internal error; the request was not processed", {})
