"""Admin UI users: created from the CLI, passwords hashed, sign-ins checked and throttled.

A user is locked after too many failed sign-ins in a row; the web layer adds the per-address
throttle and the session cookie.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
from dataclasses import dataclass
from functools import cache

from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash

from app.core.operator import record_audit
from app.models import User

ROLES = ("viewer", "operator")
_NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")


class UserError(ValueError):
    """A user cannot be saved as asked; the message says why."""


def save_user(session: Session, name: str, role: str, password: str) -> bool:
    """Create the user, or update role and password; True when created. Flushes."""
    if not _NAME.match(name):
        raise UserError("user names are 1-64 letters, digits, or . _ @ -")
    if role not in ROLES:
        raise UserError(f"role must be one of {', '.join(ROLES)}")
    if len(password) < 8:
        raise UserError("passwords need at least 8 characters")
    user = session.scalars(select(User).where(User.name == name)).one_or_none()
    created = user is None
    if user is None:
        user = User(name=name, failed_logins=0)
        session.add(user)
    user.role = role
    user.password_hash = generate_password_hash(password)
    user.failed_logins = 0
    user.locked_until = None
    session.flush()
    return created


def password_fingerprint(user: User) -> str:
    """Changes with the password: a session cookie carrying it ends when the password does."""
    return hashlib.sha256(user.password_hash.encode()).hexdigest()[:16]


def user_for_session(session: Session, user_id: int, fingerprint: str) -> User | None:
    """The user a session names, if it still exists with the same password."""
    user = session.get(User, user_id)
    if user is None or not hmac.compare_digest(password_fingerprint(user), fingerprint):
        return None
    return user


@dataclass(frozen=True)
class LoginResult:
    user: User | None
    locked_seconds: int = 0
    """When the account is locked: how many seconds are left."""


@cache
def _dummy_hash() -> str:
    # Checked against for unknown names so a wrong name costs as long as a wrong password.
    return generate_password_hash("respawn-no-such-user")


def sign_in(
    session: Session,
    name: str,
    password: str,
    now: dt.datetime,
    max_failures: int,
    lock_seconds: float,
) -> LoginResult:
    """`authenticate`, with sign-ins and refusals of a locked account in the audit log."""
    result = authenticate(session, name, password, now, max_failures, lock_seconds)
    if result.user is not None:
        record_audit(session, result.user.name, "login", "admin ui", now)
    elif result.locked_seconds:
        record_audit(session, name[:128], "login_locked", "admin ui", now)
    return result


def authenticate(
    session: Session,
    name: str,
    password: str,
    now: dt.datetime,
    max_failures: int,
    lock_seconds: float,
) -> LoginResult:
    """Check a login; count failures and lock the account after `max_failures` in a row.

    Each failure past the limit locks the account again, for twice as long (up to 64 times
    `lock_seconds`). A locked account is refused without looking at the password.
    """
    user = session.scalars(select(User).where(User.name == name)).one_or_none()
    if user is None:
        check_password_hash(_dummy_hash(), password)
        return LoginResult(None)
    if user.locked_until is not None and user.locked_until > now:
        return LoginResult(None, _seconds_left(user.locked_until, now))
    if check_password_hash(user.password_hash, password):
        user.failed_logins = 0
        user.locked_until = None
        return LoginResult(user)
    user.failed_logins = (user.failed_logins or 0) + 1
    if user.failed_logins >= max_failures:
        doublings = min(user.failed_logins - max_failures, 6)
        user.locked_until = now + dt.timedelta(seconds=lock_seconds * 2**doublings)
        return LoginResult(None, _seconds_left(user.locked_until, now))
    return LoginResult(None)


def _seconds_left(until: dt.datetime, now: dt.datetime) -> int:
    return max(1, int((until - now).total_seconds() + 0.999))
