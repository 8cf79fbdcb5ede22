"""Who is signed in to the admin UI: the Flask-Login user, and the CSRF protection.

The password check, the throttle and the sessions' generations are the core's
(`app.core.users`); this module adds what belongs to the browser session.
"""

from __future__ import annotations

from dataclasses import dataclass

from flask_wtf.csrf import CSRFProtect
from sqlalchemy.orm import Session

from app.core.users import password_fingerprint, user_for_session
from app.models import User

csrf = CSRFProtect()
"""Checked for the admin blueprint only (`_guard` in the views)."""


@dataclass(frozen=True)
class AdminUser:
    """The signed-in operator as Flask-Login sees it (not an ORM object: nothing lazy-loads)."""

    id: int
    name: str
    role: str
    generation: int
    fingerprint: str

    is_authenticated = True
    is_active = True
    is_anonymous = False

    @property
    def is_operator(self) -> bool:
        return self.role == "operator"

    def get_id(self) -> str:
        # The generation ends every session of the user at once (sign-out, new password,
        # disabled); the password fingerprint ends them when the password changes.
        return f"{self.id}:{self.generation}:{self.fingerprint}"


def admin_user(user: User) -> AdminUser:
    return AdminUser(
        user.id, user.name, user.role, user.session_generation, password_fingerprint(user)
    )


def load_user(session: Session, session_id: str) -> AdminUser | None:
    """The user a session cookie names, if that session has not been ended."""
    raw_id, _, rest = session_id.partition(":")
    raw_generation, _, fingerprint = rest.partition(":")
    if not raw_id.isdigit() or not raw_generation.isdigit() or len(raw_id) > 18:
        return None
    user = user_for_session(session, int(raw_id), int(raw_generation[:9]), fingerprint)
    return admin_user(user) if user is not None else None
