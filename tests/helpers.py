"""Small helpers the tests share: a unit of work on an app's database, users."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from app.core.users import save_user as _save_user
from app.extensions import get_runtime


@contextmanager
def transaction(app: Flask) -> Iterator[Session]:
    """`with transaction(app) as s:`: committed on success, like the background's work."""
    with get_runtime(app).transaction() as session:
        yield session


@contextmanager
def counted_statements(engines: Engine | type[Engine]) -> Iterator[list[str]]:
    """The SQL statements an engine runs meanwhile on this thread (or every engine, given
    the class: a command builds its own). The app's own threads (the intake's sweep, the
    dispatcher) use the same engine whenever they are due, and their statements are not
    the ones counted."""
    statements: list[str] = []
    caller = threading.get_ident()

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if threading.get_ident() == caller:
            statements.append(statement)

    event.listen(engines, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engines, "before_cursor_execute", record)


def save_user(app: Flask, name: str, role: str, password: str) -> bool:
    with transaction(app) as session:
        return _save_user(session, name, role, password)


_CSRF = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')


def sign_in(client: FlaskClient, name: str, password: str) -> None:
    """Sign in to the admin UI as a browser would (the login form's CSRF token first)."""
    found = _CSRF.search(client.get("/admin/login").get_data(as_text=True))
    assert found, "no CSRF token on the login page"
    response = client.post(
        "/admin/login", data={"csrf_token": found.group(1), "name": name, "password": password}
    )
    assert response.status_code == 302, response.get_data(as_text=True)


def cli_env(database_url: str, policy_file: Path, **extra: str) -> dict[str, str]:
    """The environment a `respawn` command of the tests runs with (click's runner)."""
    return {
        "RESPAWN_DATABASE_URL": database_url,
        "RESPAWN_SECRET_KEY": "cli-test-secret-key-0123456789abcdef",
        "RESPAWN_CALLBACK_TOKENS": "callback-token-0123456789",
        "RESPAWN_POLICY_FILE": str(policy_file),
        **extra,
    }
