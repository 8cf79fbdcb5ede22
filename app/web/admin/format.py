"""How the admin UI writes times, durations, ids and payloads (the template filters)."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable
from typing import Any

from flask import Flask
from markupsafe import Markup

from app.db import utcnow
from app.policy.durations import format_seconds
from app.redact import escape_controls

MAX_PAYLOAD_CHARS = 20_000
_HEX = re.compile(r"^[0-9a-f]{12,}$")
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


def human_duration(seconds: float | None) -> str:
    """`850 ms`, `4.2 s`, `3 min 5 s`, `2 h 7 min`, `3 d 4 h`; a dash when unknown."""
    if seconds is None:
        return "—"
    return format_seconds(max(seconds, 0.0))


def relative_time(moment: dt.datetime | None, now: dt.datetime) -> str:
    if moment is None:
        return "—"
    delta = (now - moment).total_seconds()
    if abs(delta) < 5:
        return "just now"
    # Keep it short: the most significant unit only.
    first = " ".join(human_duration(abs(delta)).split(" ")[:2])
    return f"{first} ago" if delta > 0 else f"in {first}"


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


def short_id(value: str | None, length: int = 8) -> str:
    """A UUID's first block (as git shortens hashes); other names unless they are long."""
    if not value:
        return "—"
    if _UUID.match(value) or _HEX.match(value):
        return value[:length]
    return value if len(value) <= 24 else value[:23] + "…"


def pretty_json(value: Any) -> str:
    text = json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)
    if len(text) > MAX_PAYLOAD_CHARS:
        text = text[:MAX_PAYLOAD_CHARS] + f"\n… ({len(text) - MAX_PAYLOAD_CHARS} more characters)"
    return text  # autoescaped by Jinja


FILTERS: dict[str, Callable[..., Any]] = {
    "utc": format_utc,
    "iso": format_iso,
    "ago": format_ago,
    "duration": human_duration,
    "short": short_id,
    "pretty_json": pretty_json,
}


def visible(value: Any) -> Any:
    """Every value a template prints: control characters and bidi overrides written out, so
    a host name shows what it is (`web\u202e1`), not what it pretends to be."""
    if isinstance(value, str) and not isinstance(value, Markup):
        return escape_controls(value, keep_lines=True)
    return value


def register_filters(app: Flask) -> None:
    for name, function in FILTERS.items():
        app.add_template_filter(function, name)
    app.jinja_env.finalize = visible
