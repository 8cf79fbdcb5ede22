"""Admin UI users: created from the CLI, passwords hashed, sign-ins checked and throttled,
sessions that can be ended from the server side.

A session names its user with the user's `session_generation` and a fingerprint of the
password hash; raising the generation (sign-out, a new password, disabling the user) ends
every session of that user at once, wherever its cookie was copied to.

Failed sign-ins are counted in the database per client address (too many from one address:
it waits) and per (user name, address) pair (too many for one name from one address: that
pair waits). The answer never tells whether a name exists, and failures from one address
never lock the right password out from another.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
from dataclasses import dataclass
from functools import cache

from sqlalchemy import delete, select
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash

from app.core.errors import NotFound, quoted
from app.core.operator import record_audit
from app.models import LoginFailure, User

ROLES = ("viewer", "operator")
_NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
MAX_KEY = 400


class UserError(ValueError):
    """A user cannot be saved as asked; the message says why."""


def save_user(session: Session, name: str, role: str, password: str) -> bool:
    """Create the user, or update role and password (ending its sessions); True when
    created. Flushes."""
    if not _NAME.match(name):
        raise UserError("user names are 1-64 letters, digits, or . _ @ -")
    if role not in ROLES:
        raise UserError(f"role must be one of {', '.join(ROLES)}")
    if len(password) < 8:
        raise UserError("passwords need at least 8 characters")
    user = session.scalars(select(User).where(User.name == name)).one_or_none()
    created = user is None
    if user is None:
        user = User(name=name, session_generation=0, disabled=False)
        session.add(user)
    else:
        user.session_generation += 1
    user.role = role
    user.password_hash = generate_password_hash(password)
    session.flush()
    return created


def set_disabled(session: Session, name: str, disabled: bool, actor: str, now: dt.datetime) -> User:
    """Disable a user (its sessions end at once; it cannot sign in) or enable it again."""
    user = session.scalars(select(User).where(User.name == name)).one_or_none()
    if user is None:
        raise NotFound(f"no user {quoted(name)}")
    user.disabled = disabled
    user.session_generation += 1
    record_audit(session, actor, "disable_user" if disabled else "enable_user", name, now)
    session.flush()
    return user


def end_sessions(session: Session, user_id: int, now: dt.datetime) -> None:
    """Sign-out: every session of the user ends, not only the one signing out."""
    user = session.get(User, user_id)
    if user is not None:
        user.session_generation += 1
        record_audit(session, user.name, "logout", "admin ui", now)


def password_fingerprint(user: User) -> str:
    """Changes with the password: a session cookie carrying it ends when the password does."""
    return hashlib.sha256(user.password_hash.encode()).hexdigest()[:16]


def user_for_session(
    session: Session, user_id: int, generation: int, fingerprint: str
) -> User | None:
    """The user a session names, if the session has not been ended since."""
    user = session.get(User, user_id)
    if user is None or user.disabled or user.session_generation != generation:
        return None
    if not hmac.compare_digest(password_fingerprint(user), fingerprint):
        return None
    return user


# --- signing in ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Throttle:
    per_address: int = 20
    """Failed sign-ins from one address (any names) within `window` before it waits."""
    per_name: int = 5
    """Failed sign-ins for one name from one address within `window` before that pair waits."""
    window: dt.timedelta = dt.timedelta(minutes=15)


@dataclass(frozen=True)
class LoginResult:
    user: User | None
    wait_seconds: int = 0
    """When throttled: how long before trying again."""


@cache
def _dummy_hash() -> str:
    # Checked against for unknown names so a wrong name costs as long as a wrong password.
    return generate_password_hash("respawn-no-such-user")


def _keys(name: str, address: str) -> tuple[str, str]:
    address_key = f"address:{address}"[:MAX_KEY]
    return address_key, f"name:{address}|{name.lower()}"[:MAX_KEY]


def _wait(session: Session, key: str, limit: int, window: dt.timedelta, now: dt.datetime) -> float:
    """Seconds until `key` has fewer than `limit` failures within the window (0: go ahead)."""
    times = list(
        session.scalars(
            select(LoginFailure.failed_at)
            .where(LoginFailure.key == key, LoginFailure.failed_at > now - window)
            .order_by(LoginFailure.failed_at.desc())
            .limit(limit)
        )
    )
    if len(times) < limit:
        return 0.0
    return max(0.0, (times[-1] + window - now).total_seconds())


def sign_in(
    session: Session,
    name: str,
    password: str,
    address: str,
    now: dt.datetime,
    throttle: Throttle,
) -> LoginResult:
    """Check a sign-in from `address`; count a failure; throttle by address and by pair.

    A throttled attempt is refused without looking at the password, and answered the same
    whether the name exists or not. Sign-ins, and refusals while throttled, are audited.
    """
    address_key, name_key = _keys(name, address)
    wait = max(
        _wait(session, address_key, throttle.per_address, throttle.window, now),
        _wait(session, name_key, throttle.per_name, throttle.window, now),
    )
    if wait > 0:
        record_audit(session, name[:128], "login_throttled", f"admin ui from {address}", now)
        return LoginResult(None, _whole_seconds(wait))
    user = session.scalars(select(User).where(User.name == name)).one_or_none()
    hashed = user.password_hash if user is not None else _dummy_hash()
    if check_password_hash(hashed, password) and user is not None and not user.disabled:
        session.execute(delete(LoginFailure).where(LoginFailure.key == name_key))
        record_audit(session, user.name, "login", "admin ui", now)
        return LoginResult(user)
    session.add_all([LoginFailure(key=address_key, failed_at=now),
                     LoginFailure(key=name_key, failed_at=now)])  # fmt: skip
    # Forget what no window can count any more (bounded: one sweep per failure).
    session.execute(delete(LoginFailure).where(LoginFailure.failed_at <= now - throttle.window))
    return LoginResult(None)


def _whole_seconds(seconds: float) -> int:
    return max(1, int(seconds + 0.999))
