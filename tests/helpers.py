"""Small helpers the tests share: a unit of work on an app's database, users."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from flask import Flask
from sqlalchemy.orm import Session

from app.core.users import save_user as _save_user
from app.extensions import get_runtime


@contextmanager
def transaction(app: Flask) -> Iterator[Session]:
    """`with transaction(app) as s:`: committed on success, like the background's work."""
    with get_runtime(app).transaction() as session:
        yield session


def save_user(app: Flask, name: str, role: str, password: str) -> bool:
    with transaction(app) as session:
        return _save_user(session, name, role, password)
