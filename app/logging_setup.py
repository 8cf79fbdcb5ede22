"""Logging: text or JSON lines, secrets kept out of every record and traceback, and the
request each record belongs to (its id) attached."""

from __future__ import annotations

import contextvars
import datetime as dt
import json
import logging
from typing import Any, Final

from app.redact import escape_controls, redact_text

_installed = False
_TRACEBACKS = logging.Formatter()
TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"
CONTEXT_FIELDS: Final = ("request_id", "execution_id", "job_id", "account")
"""Fields a record may carry (`extra=`); JSON lines include those that are set."""

REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
"""The id of the request being served (set by the web layer), for every record it logs."""


class JSONFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the context fields that are
    set, and the (redacted) traceback."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                line[name] = escape_controls(redact_text(str(value)))
        for name, value in getattr(record, "fields", {}).items():
            line[name] = value
        if record.exc_info and record.exc_info[0] is not None:
            line["traceback"] = record.exc_text or redact_text(
                self.formatException(record.exc_info)
            )
        return redact_text(json.dumps(line, default=str, ensure_ascii=False))


class RedactingFormatter(logging.Formatter):
    """The formatted line, tracebacks included, with private keys and bearer tokens removed."""

    def format(self, record: logging.LogRecord) -> str:
        return redact_text(super().format(record))


def _install_record_factory() -> None:
    """Redact each record's message as it is made, so every handler sees the clean text."""
    global _installed
    if _installed:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        record.request_id = REQUEST_ID.get()
        if record.exc_info and record.exc_info[0] is not None:
            # Formatters reuse `exc_text` when it is set: every handler gets the clean text.
            record.exc_text = redact_text(_TRACEBACKS.formatException(record.exc_info))
        if record.stack_info:
            record.stack_info = redact_text(record.stack_info)
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            return record
        # One record, one line: an id with a newline in it cannot forge another record.
        cleaned = escape_controls(redact_text(message))
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return record

    logging.setLogRecordFactory(factory)
    _installed = True


def configure_logging(level: str, fmt: str = "text") -> None:
    """Records to stderr, as text lines or JSON lines (`RESPAWN_LOG_FORMAT`)."""
    _install_record_factory()
    root = logging.getLogger()
    formatter: logging.Formatter = (
        JSONFormatter() if fmt == "json" else RedactingFormatter(TEXT_FORMAT)
    )
    ours = [h for h in root.handlers if isinstance(h.formatter, RedactingFormatter | JSONFormatter)]
    if ours:
        for handler in ours:
            handler.setFormatter(formatter)
    else:
        handler = logging.StreamHandler()
        handler.setFormatter(formatter)
        root.addHandler(handler)
    root.setLevel(level.upper())
