"""Settings from the environment: required ones, *_FILE secrets, bad values."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.config import ConfigError, database_url_from_env, load_settings

BASE = {"RESPAWN_SECRET_KEY": "s" * 32, "RESPAWN_CALLBACK_TOKENS": "a" * 20}


def test_defaults_and_lists() -> None:
    settings = load_settings({**BASE, "RESPAWN_API_TOKENS": " x1, ,x2 "}, instance_path="/tmp/i")

    assert settings.database_url == "sqlite:////tmp/i/respawn.db"
    assert settings.api_tokens == ("x1", "x2")
    assert settings.dispatcher == "embedded"
    assert settings.policy_file == "policy.yaml"
    assert settings.runner_api_url == "https://api.runner.ctl.io"
    assert settings.runner_configured is False


@pytest.mark.parametrize("missing", ["RESPAWN_SECRET_KEY", "RESPAWN_CALLBACK_TOKENS"])
def test_required_settings_are_named(missing: str) -> None:
    environ = {k: v for k, v in BASE.items() if k != missing}

    with pytest.raises(ConfigError, match=missing):
        load_settings(environ)


def test_secrets_come_from_files(tmp_path: Path) -> None:
    (tmp_path / "key").write_text("file-secret-key\n")
    (tmp_path / "pw").write_text("runner-pass")

    settings = load_settings(
        {
            "RESPAWN_SECRET_KEY_FILE": str(tmp_path / "key"),
            "RESPAWN_CALLBACK_TOKENS": "b" * 20,
            "RESPAWN_RUNNER_USERNAME": "ops",
            "RESPAWN_RUNNER_PASSWORD_FILE": str(tmp_path / "pw"),
        }
    )

    assert settings.secret_key == "file-secret-key"
    assert settings.runner_password == "runner-pass"
    assert settings.runner_configured is True
    assert "runner-pass" not in repr(settings) and "file-secret-key" not in repr(settings)


def test_unreadable_secret_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="RESPAWN_SECRET_KEY_FILE: cannot read"):
        load_settings({**BASE, "RESPAWN_SECRET_KEY_FILE": str(tmp_path / "nope")})


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("RESPAWN_MAX_BODY_BYTES", "lots", "not a valid int"),
        ("RESPAWN_SECURE_COOKIES", "maybe", "not a valid bool"),
        ("RESPAWN_DISPATCHER", "sometimes", "embedded"),
        ("RESPAWN_CALLBACK_TOKENS", "short", "at least 16"),
        ("RESPAWN_LEASE_SECONDS", "5", "must exceed"),
    ],
)
def test_bad_values_are_refused(name: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings({**BASE, name: value})


def test_database_url_alone_for_migrations(tmp_path: Path) -> None:
    assert database_url_from_env(str(tmp_path), {"RESPAWN_DATABASE_URL": "postgresql://x/y"}) == (
        "postgresql://x/y"
    )
    assert database_url_from_env(str(tmp_path / "inst"), {}).endswith("inst/respawn.db")
