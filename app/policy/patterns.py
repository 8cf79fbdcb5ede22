"""Patterns in the policy: shell-style globs for names, regular expressions for messages."""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from typing import Final

MESSAGE_SCAN_LIMIT: Final = 4096
"""A message rule sees at most this many leading characters of a host's message."""


@dataclass(frozen=True)
class Glob:
    """A case-sensitive shell-style pattern (``fnmatch.fnmatchcase``), compiled once."""

    pattern: str
    compiled: re.Pattern[str] = field(compare=False, repr=False)

    @classmethod
    def of(cls, pattern: str) -> Glob:
        return cls(pattern, re.compile(fnmatch.translate(pattern)))

    def matches(self, value: str) -> bool:
        return self.compiled.match(value) is not None


@dataclass(frozen=True)
class MessagePattern:
    """A regular expression, searched for in a message's first ``MESSAGE_SCAN_LIMIT`` characters."""

    pattern: str
    compiled: re.Pattern[str] = field(compare=False, repr=False)

    @classmethod
    def of(cls, pattern: str) -> MessagePattern:
        return cls(pattern, re.compile(pattern))

    def search(self, message: str) -> bool:
        return self.compiled.search(message, 0, MESSAGE_SCAN_LIMIT) is not None
