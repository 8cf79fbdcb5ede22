"""Sign-in and sessions (docs/security.md): sessions that end server-side, a throttle that
neither reveals names nor lets anyone lock an operator out, real client addresses."""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections.abc import Callable

import pytest
from click.testing import CliRunner
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select, update
from werkzeug.security import generate_password_hash

from app.cli import main
from app.models import AuditEntry, LoginFailure
from tests.helpers import save_user, transaction

PASSWORD = "correct horse battery staple"
_TOKEN = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')


@pytest.fixture(autouse=True)
def _cheap_password_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    cheap = functools.partial(generate_password_hash, method="pbkdf2:sha256:1000")
    monkeypatch.setattr("app.core.users.generate_password_hash", cheap)


@pytest.fixture
def users(app: Flask) -> None:
    save_user(app, "olivia", "operator", PASSWORD)
    save_user(app, "victor", "viewer", PASSWORD)


def attempt(
    app: Flask,
    name: str,
    password: str,
    address: str = "10.0.0.1",
    client: FlaskClient | None = None,
) -> tuple[int, str, FlaskClient]:
    client = client or app.test_client()
    environ = {"REMOTE_ADDR": address}
    page = client.get("/admin/login", environ_base=environ).get_data(as_text=True)
    found = _TOKEN.search(page)
    assert found
    response = client.post(
        "/admin/login",
        data={"csrf_token": found.group(1), "name": name, "password": password},
        environ_base=environ,
    )
    return response.status_code, response.get_data(as_text=True), client


def signed_in(client: FlaskClient) -> bool:
    return client.get("/admin/overview").status_code == 200


def test_failures_for_one_name_from_one_address_slow_that_pair_only(
    app: Flask, users: None
) -> None:
    app.config.update(ADMIN_LOGIN_MAX_PER_NAME=3)
    statuses = [attempt(app, "olivia", "wrong-password")[0] for _ in range(3)]

    throttled, text, _ = attempt(app, "olivia", PASSWORD)  # the right password, too late here

    assert statuses == [200, 200, 200]
    assert throttled == 429 and "Too many failed sign-ins. Try again in" in text
    assert attempt(app, "olivia", PASSWORD, address="10.0.0.2")[0] == 302  # another address
    assert attempt(app, "victor", PASSWORD)[0] == 302  # another name from the same address
    with transaction(app) as session:
        session.execute(
            update(LoginFailure).values(failed_at=dt.datetime.now(dt.UTC) - dt.timedelta(hours=1))
        )
    assert attempt(app, "olivia", PASSWORD)[0] == 302  # the window has passed


def test_an_unknown_name_gets_the_same_answers_as_a_known_one(app: Flask, users: None) -> None:
    app.config.update(ADMIN_LOGIN_MAX_PER_NAME=2)
    answers = {}
    for name in ("olivia", "nobody-at-all"):
        first = attempt(app, name, "wrong-password", address=f"10.1.0.{len(answers)}")
        attempt(app, name, "wrong-password", address=f"10.1.0.{len(answers)}")
        third = attempt(app, name, "wrong-password", address=f"10.1.0.{len(answers)}")
        answers[name] = [
            (status, re.sub(r"Try again in [^.<]+", "Try again in …", _flash(text)))
            for status, text, _ in (first, third)
        ]

    assert answers["olivia"] == answers["nobody-at-all"]
    assert answers["olivia"][1][0] == 429


def _flash(page: str) -> str:
    found = re.search(r'class="flash[^"]*"[^>]*>(.*?)</', page, re.S)
    return found.group(1).strip() if found else ""


def test_one_address_trying_many_names_is_slowed_down(app: Flask, users: None) -> None:
    app.config.update(ADMIN_LOGIN_MAX_PER_ADDRESS=4)
    statuses = [attempt(app, f"nobody{n}", "wrong-password")[0] for n in range(4)]

    assert statuses == [200, 200, 200, 200]
    assert attempt(app, "olivia", PASSWORD)[0] == 429  # this address waits, for any name
    assert attempt(app, "olivia", PASSWORD, address="10.9.9.9")[0] == 302
    with transaction(app) as session:
        actions = {(a.actor, a.action) for a in session.scalars(select(AuditEntry))}
    assert ("olivia", "login_throttled") in actions


def test_signing_out_ends_every_session_of_the_user_and_copied_cookies(
    app: Flask, users: None
) -> None:
    _, _, first = attempt(app, "olivia", PASSWORD)
    _, _, second = attempt(app, "olivia", PASSWORD, address="10.0.0.7")
    copied = app.test_client()
    cookie = first.get_cookie("session")
    assert cookie is not None
    copied.set_cookie("session", cookie.value)
    assert signed_in(copied)

    token = _TOKEN.search(first.get("/admin/overview").get_data(as_text=True))
    assert token
    first.post("/admin/logout", data={"csrf_token": token.group(1)})

    assert not signed_in(first)
    assert not signed_in(copied)  # a copy of the cookie taken before the sign-out
    assert not signed_in(second)  # the same user's session elsewhere
    assert attempt(app, "olivia", PASSWORD)[0] == 302  # signing in again works


def test_a_new_password_ends_the_users_sessions(app: Flask, users: None) -> None:
    _, _, client = attempt(app, "olivia", PASSWORD)

    save_user(app, "olivia", "operator", "another long password")

    assert not signed_in(client)


def test_disabling_a_user_ends_its_sessions_and_its_sign_ins(
    app: Flask, users: None, database_url: str, tmp_path: object
) -> None:
    _, _, client = attempt(app, "olivia", PASSWORD)
    env = {
        "RESPAWN_DATABASE_URL": database_url,
        "RESPAWN_SECRET_KEY": "sessions-test-secret-key-0123456789abcdef",
        "RESPAWN_CALLBACK_TOKENS": "sessions-test-callback-token",
    }

    disabled = CliRunner().invoke(main, ["user", "disable", "olivia"], env=env)

    assert disabled.exit_code == 0, disabled.output
    assert not signed_in(client)
    assert attempt(app, "olivia", PASSWORD)[0] == 200  # refused like a wrong password
    enabled = CliRunner().invoke(main, ["user", "enable", "olivia"], env=env)
    assert enabled.exit_code == 0, enabled.output
    assert attempt(app, "olivia", PASSWORD)[0] == 302
    unknown = CliRunner().invoke(main, ["user", "disable", "nobody"], env=env)
    assert unknown.exit_code == 1 and "no user 'nobody'" in unknown.output


@pytest.mark.parametrize(
    ("setting", "idle_for", "signed_in_for"),
    [("session_idle", 3600, 60), ("session_lifetime", 60, 7200)],
)
def test_sessions_end_when_idle_and_at_their_lifetime(
    make_app: Callable[..., Flask], setting: str, idle_for: int, signed_in_for: int
) -> None:
    app = make_app(**{setting: 1800.0})
    save_user(app, "olivia", "operator", PASSWORD)
    _, _, client = attempt(app, "olivia", PASSWORD)
    assert signed_in(client)

    now = dt.datetime.now(dt.UTC).timestamp()
    with client.session_transaction() as cookie:
        cookie["respawn_seen_at"] = now - idle_for
        cookie["respawn_signed_in_at"] = now - signed_in_for

    response = client.get("/admin/overview")
    assert response.status_code == 302 and "/admin/login" in response.location
    assert not signed_in(client)
