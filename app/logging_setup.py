"""Logging: one format, and secrets kept out of every record and traceback."""

from __future__ import annotations

import logging
from typing import Any

from app.redact import escape_controls, redact_text

_installed = False
_TRACEBACKS = logging.Formatter()


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


def configure_logging(level: str) -> None:
    _install_record_factory()
    root = logging.getLogger()
    if not any(isinstance(h.formatter, RedactingFormatter) for h in root.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
    root.setLevel(level.upper())
