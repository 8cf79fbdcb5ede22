"""The domain's own failures: plain exceptions, with a short code and a message for people.

The core knows nothing of HTTP; the web layer maps each class to a status code in one place
(`app.web.errors`), and the CLI prints the message.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

QUOTED_LIMIT = 80
"""Characters of a caller's value an error message repeats; the rest is cut."""


def quoted(value: object) -> str:
    """`value` quoted for an error message, cut to `QUOTED_LIMIT` characters: an id of any
    length may be asked for, and the answer need not carry it back whole."""
    text = repr(str(value))
    return text if len(text) <= QUOTED_LIMIT else text[: QUOTED_LIMIT - 2] + "…'"


class DomainError(Exception):
    """A request the domain refuses; `fields` maps input names to what is wrong with them."""

    code = "error"

    def __init__(
        self, message: str, *, fields: Mapping[str, Any] | None = None, code: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.fields = dict(fields or {})
        if code is not None:
            self.code = code


class NotFound(DomainError):
    """No such execution, restart, job or pause."""

    code = "not_found"


class Conflict(DomainError):
    """Not possible in the current state (a restart already pending, not failed, ...)."""

    code = "conflict"


class Invalid(DomainError):
    """Well-formed input that does not say something the domain accepts."""

    code = "invalid"


class Malformed(DomainError):
    """Input that cannot even be read (a cursor that is not ours, text that is not JSON)."""

    code = "malformed"
