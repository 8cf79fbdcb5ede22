"""What the HTTP edge accepts as input before any view runs: strict JSON, row ids in range,
and ids in URL paths that stay single path segments however they are spelled."""

from __future__ import annotations

import json
import math
from typing import Any
from urllib.parse import quote

from werkzeug.routing import BaseConverter, ValidationError

MAX_ROW_ID = 2**31 - 1
"""The largest id of an integer column on either database (PostgreSQL's `integer`)."""


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400 overflows to infinity
        raise ValueError(text)
    return value


def _reject_constant(text: str) -> Any:
    raise ValueError(text)  # NaN, Infinity, -Infinity are not JSON


def loads_strict(raw: bytes | str) -> Any:
    """JSON as RFC 8259 has it: no NaN or Infinity, spelled or overflowed (ValueError)."""
    return json.loads(raw, parse_constant=_reject_constant, parse_float=_finite)


def check_storable(body: Any, raw: bytes | None = None) -> None:
    """Refuse text no database can store: NUL characters and lone surrogates (\\ud800),
    anywhere in a parsed JSON body (ValueError).

    With the UTF-8 `raw` text the body was parsed from, most bodies are cleared without a
    walk: JSON spells a NUL or a surrogate only as a `\\u` escape, or (a surrogate, which the
    parser lets through) as bytes starting 0xED; text with neither holds none. (Text in
    UTF-16 or UTF-32, which the parser also reads, has NUL bytes: it is walked.)"""
    if raw is not None and not any(mark in raw for mark in (b"\\u", b"\xed", b"\x00")):
        return
    stack = [body]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
        elif isinstance(value, str):
            if "\x00" in value:
                raise ValueError("NUL character")
            value.encode("utf-8")  # raises UnicodeEncodeError (a ValueError) on surrogates


class RowIdConverter(BaseConverter):
    """`<row_id:name>`: a database row id, 1..2^31-1; anything else matches no route (404)."""

    regex = r"[1-9][0-9]{0,9}"

    def to_python(self, value: str) -> int:
        number = int(value)
        if number > MAX_ROW_ID:
            raise ValidationError  # no route matches: 404
        return number

    def to_url(self, value: Any) -> str:
        return str(int(value))


SEGMENT = r"[^/\x00-\x1f\x7f]+"
"""What an id in a path may hold: no `/`, and no control character, which no id from the
Runner has (`app.runner.documents`) and PostgreSQL cannot store (NUL)."""


class SegmentConverter(BaseConverter):
    """`<segment:name>`: an id from the Runner inside one path segment. Built URLs encode
    every reserved character, and dot segments, so no id can step into another path. A
    segment with a control character matches no route (404)."""

    regex = SEGMENT

    def to_url(self, value: Any) -> str:
        return quote_segment(str(value))


def quote_segment(value: str) -> str:
    quoted = quote(value, safe="")
    return quoted.replace(".", "%2E") if set(value) == {"."} else quoted
