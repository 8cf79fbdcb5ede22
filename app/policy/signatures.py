"""Error signatures: what makes two failures "the same failure", and the per-signature breaker.

Pure: the caller passes the sightings (failed runs with the same signature) and the time.
"""

from __future__ import annotations

import bisect
import hashlib
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Final

from app.policy.model import (
    HostFailure,
    Sighting,
    Signature,
    SignatureBreaker,
    SignatureState,
)
from app.policy.patterns import MESSAGE_SCAN_LIMIT

SIGNATURE_KEY_LENGTH: Final = 16
"""Hex digits of sha256 kept in ``Signature.key``."""

_HEX4 = r"[0-9A-Fa-f]{1,4}"
_IPV6 = (
    rf"(?:{_HEX4}:){{7}}{_HEX4}"  # full form
    rf"|{_HEX4}(?::{_HEX4}){{0,6}}::(?:{_HEX4}(?::{_HEX4}){{0,6}})?"  # a::, a::b, a:b::c
    rf"|::{_HEX4}(?::{_HEX4}){{0,6}}"  # ::1 (a bare :: is left alone)
)
_IPV4 = r"(?:\d{1,3}\.){3}\d{1,3}"
_FILE_SUFFIXES = (
    "cfg|conf|crt|csv|d|deb|gz|html?|ini|j2|jar|js|json|key|lock|log|md|pem|php|pid|pl|py|pyc"
    "|rb|repo|rpm|service|sh|socket|sql|tar|tgz|timer|toml|txt|xml|xz|ya?ml|zip"
)
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"

# Applied in order: a later pattern never sees what an earlier one masked (the placeholders
# have no digits, dots or quotes for the later ones to find).
_MASKS: Final[tuple[tuple[re.Pattern[str], str], ...]] = (
    # a quoted path or URL, quotes included: '/srv/my app', "./x", '~/x', 'C:\x', 'https://h/x',
    # or any quoted text without spaces that has a slash ('templates/app.conf.j2')
    (
        re.compile(
            r"""(['"])(?:(?:[A-Za-z][\w+.-]*://|\.{0,2}/|~/?|[A-Za-z]:\\)(?:(?!\1)[^\n])*"""
            r"""|[^\s'"]*/[^\s'"]*)\1"""
        ),
        "<path>",
    ),
    (
        re.compile(
            r"\b[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}\b"
        ),
        "<uuid>",
    ),
    # [v6]:port (also [::]), then bare v6 (with a zone, or ending in a v4 address), not part of
    # a word or of a longer run of colons and hex digits (so std::vector and 12:30:45 stay)
    (re.compile(rf"\[(?:{_IPV6}|::)(?:%[\w.]+)?\](?::\d{{1,5}})?"), "<ip>"),
    (
        re.compile(rf"(?<![\w:.])(?:{_IPV6})(?:\.\d{{1,3}}){{0,3}}(?:%[\w.]+)?(?!\w)(?!:[\w:])"),
        "<ip>",
    ),
    # v4 with a port; a sentence's full stop may follow
    (re.compile(rf"(?<![\w.]){_IPV4}(?::\d{{1,5}})?(?!\w)(?!\.\w)"), "<ip>"),
    # a dotted lower-case DNS name whose last label is a word that is not a file suffix
    (
        re.compile(
            rf"(?<![\w.-])(?:{_LABEL}\.)+(?!(?:{_FILE_SUFFIXES})(?![a-z0-9-]))[a-z][a-z0-9-]*[a-z]"
            r"(?![\w-])(?!\.\w)"
        ),
        "<host>",
    ),
    # 0x..., or six or more hex digits with at least one digit and one letter (a pure number
    # is a number; a word made of a-f letters such as "decade" is a word)
    (
        re.compile(
            r"\b(?:0[xX][0-9A-Fa-f]+|(?=[0-9A-Fa-f]*\d)(?=[0-9A-Fa-f]*[A-Fa-f])[0-9A-Fa-f]{6,})\b"
        ),
        "<hex>",
    ),
    (re.compile(r"\d+(?:\.\d+)*"), "<n>"),
    (re.compile(r"\s+"), " "),
)


def normalise_message(message: str) -> str:
    """The message with its variable parts masked, whitespace collapsed: UUIDs, IP addresses
    (v4 and v6, with ports), hex ids, host names (dotted names), quoted paths and numbers each
    become a placeholder (`<uuid>`, `<ip>`, `<hex>`, `<host>`, `<path>`, `<n>`). Only the first
    `MESSAGE_SCAN_LIMIT` characters count."""
    text = message[:MESSAGE_SCAN_LIMIT]
    for pattern, placeholder in _MASKS:
        text = pattern.sub(placeholder, text)
    return text.strip()


def signature_key(failure_class: str, text: str) -> str:
    """The short stable hash the breaker counts by: sha256 of class, NUL, normalised text."""
    digest = hashlib.sha256(f"{failure_class}\0{text}".encode()).hexdigest()
    return digest[:SIGNATURE_KEY_LENGTH]


def failure_signature(hosts: Sequence[HostFailure]) -> Signature | None:
    """The execution's signature: the most common (failure class, normalised message) among
    its failed hosts, ties going to the first host in the given order; None without hosts.
    A host listed twice counts once (its first entry)."""
    seen: set[str] = set()
    counts: Counter[tuple[str, str]] = Counter()
    for failure in hosts:
        if failure.host in seen:
            continue
        seen.add(failure.host)
        counts[(failure.failure_class.lower(), normalise_message(failure.message))] += 1
    if not counts:
        return None
    # Counter keeps first-insertion order and max() returns the first of equal counts.
    failure_class, text = max(counts, key=counts.__getitem__)
    return Signature(signature_key(failure_class, text), failure_class, text)


def signature_state(
    breaker: SignatureBreaker, sightings: Iterable[Sighting], now: datetime
) -> SignatureState:
    """Whether the signature's breaker is open at ``now``: the condition (at least
    ``executions`` distinct executions of at least ``jobs`` distinct jobs inside
    (t - window, t]) holds now or held less than ``cool_down`` ago. Sightings after ``now``
    are ignored.

    The condition can only change when a sighting enters the window (its time) or leaves it
    (its time + window), so only those moments are evaluated, with running counts.
    """
    seen = sorted(s for s in sightings if s.at <= now)
    times = [s.at for s in seen]
    moments = sorted({*times, *(t + breaker.window for t in times if t + breaker.window <= now)})
    executions: Counter[str] = Counter()
    jobs: Counter[str] = Counter()
    entered = left = 0
    held_end: datetime | None = None
    holding_now = False
    counts = (0, 0)
    for index, moment in enumerate(moments):
        high = bisect.bisect_right(times, moment)
        low = bisect.bisect_right(times, moment - breaker.window)
        for sighting in seen[entered:high]:
            executions[sighting.execution_id] += 1
            jobs[sighting.job_id] += 1
        for sighting in seen[left:low]:
            _drop(executions, sighting.execution_id)
            _drop(jobs, sighting.job_id)
        entered, left = high, low
        if len(executions) >= breaker.executions and len(jobs) >= breaker.jobs:
            counts = (len(executions), len(jobs))
            if index + 1 < len(moments):
                held_end = moments[index + 1]
            else:
                holding_now = True
    if holding_now:
        return SignatureState(True, now + breaker.cool_down, *counts)
    if held_end is not None and now < held_end + breaker.cool_down:
        return SignatureState(True, held_end + breaker.cool_down, *counts)
    low = bisect.bisect_right(times, now - breaker.window)
    inside = seen[low:]
    return SignatureState(
        False,
        None,
        len({s.execution_id for s in inside}),
        len({s.job_id for s in inside}),
    )


def _drop(counter: Counter[str], key: str) -> None:
    counter[key] -= 1
    if counter[key] <= 0:
        del counter[key]
