"""Who is signed in to the admin UI, and how often an address may fail to sign in.

The password check and the per-user lock are the core's (`app.core.users`); this module adds
what belongs to the browser session: the Flask-Login user and the per-address throttle.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from flask import current_app
from flask_wtf.csrf import CSRFProtect
from sqlalchemy.orm import Session

from app.core.users import password_fingerprint, user_for_session
from app.models import User

csrf = CSRFProtect()
"""Checked for the admin blueprint only (`_guard` in the views)."""
THROTTLE = "respawn_admin_throttle"


@dataclass(frozen=True)
class AdminUser:
    """The signed-in operator as Flask-Login sees it (not an ORM object: nothing lazy-loads)."""

    id: int
    name: str
    role: str
    fingerprint: str

    is_authenticated = True
    is_active = True
    is_anonymous = False

    @property
    def is_operator(self) -> bool:
        return self.role == "operator"

    def get_id(self) -> str:
        # The password fingerprint signs out every session of a user whose password changed.
        return f"{self.id}:{self.fingerprint}"


def admin_user(user: User) -> AdminUser:
    return AdminUser(user.id, user.name, user.role, password_fingerprint(user))


def load_user(session: Session, session_id: str) -> AdminUser | None:
    """The user a session cookie names, if it still exists with the same password."""
    raw_id, _, fingerprint = session_id.partition(":")
    if not raw_id.isdigit():
        return None
    user = user_for_session(session, int(raw_id), fingerprint)
    return admin_user(user) if user is not None else None


class AddressThrottle:
    """Failed logins per client address over a sliding window, in this process's memory.

    The per-user lock stops guessing one account's password; this stops one address from
    trying many user names. Per process: with N workers an address gets up to N times the
    limit, which still bounds a spray.
    """

    MAX_ADDRESSES = 10_000

    def __init__(self, limit: int, window: float, clock: Callable[[], float] = time.monotonic):
        self.limit = limit
        self.window = window
        self.clock = clock
        self._lock = threading.Lock()
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, address: str, now: float) -> deque[float]:
        times = self._failures.setdefault(address, deque())
        while times and times[0] <= now - self.window:
            times.popleft()
        return times

    def wait_seconds(self, address: str) -> float:
        """How long this address must wait before trying again (0: go ahead)."""
        now = self.clock()
        with self._lock:
            times = self._recent(address, now)
            if len(times) < self.limit:
                return 0.0
            return max(0.0, times[0] + self.window - now)

    def failed(self, address: str) -> None:
        now = self.clock()
        with self._lock:
            if len(self._failures) >= self.MAX_ADDRESSES and address not in self._failures:
                # Forget the quietest addresses rather than grow without bound.
                for key in [k for k, v in self._failures.items() if not self._recent(k, now)]:
                    del self._failures[key]
                if len(self._failures) >= self.MAX_ADDRESSES:
                    self._failures.pop(next(iter(self._failures)))
            self._recent(address, now).append(now)

    def succeeded(self, address: str) -> None:
        with self._lock:
            self._failures.pop(address, None)


def login_throttle() -> AddressThrottle:
    """This process's address throttle (made by `init_admin`)."""
    throttle: AddressThrottle = current_app.extensions[THROTTLE]
    return throttle
