"""`respawn user add` as an operator runs it, then a login with that user."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from app.cli import main
from app.models import User
from tests.conftest import CALLBACK_TOKEN
from tests.helpers import transaction


@pytest.fixture
def env(database_url: str, policy_file: Path) -> dict[str, str]:
    return {
        "RESPAWN_DATABASE_URL": database_url,
        "RESPAWN_SECRET_KEY": "user-command-secret-key-0123456789abcdef",
        "RESPAWN_CALLBACK_TOKENS": CALLBACK_TOKEN,
        "RESPAWN_POLICY_FILE": str(policy_file),
        "RESPAWN_DISPATCHER": "off",
    }


def test_add_then_update_a_user(env: dict[str, str], make_app: object) -> None:
    runner = CliRunner()

    added = runner.invoke(
        main, ["user", "add", "alice", "--role", "viewer"], input="correct-horse-1\n", env=env
    )
    updated = runner.invoke(
        main, ["user", "add", "alice", "--role", "operator"], input="correct-horse-2\n", env=env
    )

    assert added.exit_code == 0, added.output
    assert "created viewer alice" in added.output
    assert updated.exit_code == 0 and "updated operator alice" in updated.output
    app = make_app()  # type: ignore[operator]
    with transaction(app) as session:
        user = session.scalars(select(User).where(User.name == "alice")).one()
        assert user.role == "operator"
        assert "correct-horse" not in user.password_hash
    client = app.test_client()
    page = client.get("/admin/login").get_data(as_text=True)
    token = page.split('name="csrf_token" type="hidden" value="')[1].split('"')[0]
    response = client.post(
        "/admin/login", data={"name": "alice", "password": "correct-horse-2", "csrf_token": token}
    )
    assert response.status_code == 302


@pytest.mark.parametrize(
    ("args", "password", "message"),
    [
        (["user", "add", "bob", "--role", "viewer"], "short\n", "at least 8"),
        (["user", "add", "bad name!", "--role", "viewer"], "long-enough-1\n", "user names"),
        (["user", "add", "bob", "--role", "admin"], "long-enough-1\n", "Invalid value"),
    ],
)
def test_bad_users_are_refused(
    env: dict[str, str], args: list[str], password: str, message: str
) -> None:
    result = CliRunner().invoke(main, args, input=password, env=env)

    assert result.exit_code != 0
    assert message in result.output
