"""Error signatures: what makes two failures "the same failure", and the per-signature breaker.

Pure: the caller passes the sightings (failed runs with the same signature) and the time.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from app.policy.model import HostFailure, Sighting, Signature, SignatureBreaker, SignatureState


def normalise_message(message: str) -> str:
    """The message with its variable parts masked, whitespace collapsed: UUIDs, IP addresses
    (v4 and v6, with ports), hex ids, host names (dotted names), quoted paths and numbers each
    become a placeholder (`<uuid>`, `<ip>`, `<hex>`, `<host>`, `<path>`, `<n>`). Only the first
    `MESSAGE_SCAN_LIMIT` characters count."""
    raise NotImplementedError


def failure_signature(hosts: Sequence[HostFailure]) -> Signature | None:
    """The execution's signature: the most common (failure class, normalised message) among
    its failed hosts, ties going to the first host in the given order; None without hosts."""
    raise NotImplementedError


def signature_state(
    breaker: SignatureBreaker, sightings: Iterable[Sighting], now: datetime
) -> SignatureState:
    """Whether the signature's breaker is open at ``now``: the condition (at least
    ``executions`` distinct executions of at least ``jobs`` distinct jobs inside
    (t - window, t]) holds now or held less than ``cool_down`` ago. Sightings after ``now``
    are ignored."""
    raise NotImplementedError
