"""Admin UI users: created from the CLI, passwords hashed."""

from __future__ import annotations

import re

from flask import Flask
from sqlalchemy import select
from werkzeug.security import generate_password_hash

from app.db import transaction
from app.models import User

ROLES = ("viewer", "operator")
_NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")


class UserError(ValueError):
    pass


def save_user(app: Flask, name: str, role: str, password: str) -> bool:
    """Create the user, or update role and password; True when created."""
    if not _NAME.match(name):
        raise UserError("user names are 1-64 letters, digits, or . _ @ -")
    if role not in ROLES:
        raise UserError(f"role must be one of {', '.join(ROLES)}")
    if len(password) < 8:
        raise UserError("passwords need at least 8 characters")
    with transaction(app) as session:
        user = session.scalars(select(User).where(User.name == name)).one_or_none()
        created = user is None
        if user is None:
            user = User(name=name, failed_logins=0)
            session.add(user)
        user.role = role
        user.password_hash = generate_password_hash(password)
        user.failed_logins = 0
        user.locked_until = None
    return created
