"""Settings from the environment: required ones, *_FILE secrets, bad values."""

from __future__ import annotations

from pathlib import Path

import pytest

from app import config as config_module
from app.config import ConfigError, database_url_from_env, load_settings

BASE = {"RESPAWN_SECRET_KEY": "s" * 32, "RESPAWN_CALLBACK_TOKENS": "a" * 20}


def test_defaults_and_lists() -> None:
    tokens = " api-token-one-0123, ,api-token-two-0123 "
    settings = load_settings({**BASE, "RESPAWN_API_TOKENS": tokens}, instance_path="/tmp/i")

    assert settings.database_url == "sqlite:////tmp/i/respawn.db"
    assert settings.api_tokens == ("api-token-one-0123", "api-token-two-0123")
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
    (tmp_path / "key").write_text("file-secret-key-0123456789abcdef0123\n")
    (tmp_path / "pw").write_text("runner-pass")

    settings = load_settings(
        {
            "RESPAWN_SECRET_KEY_FILE": str(tmp_path / "key"),
            "RESPAWN_CALLBACK_TOKENS": "b" * 20,
            "RESPAWN_RUNNER_USERNAME": "ops",
            "RESPAWN_RUNNER_PASSWORD_FILE": str(tmp_path / "pw"),
        }
    )

    assert settings.secret_key == "file-secret-key-0123456789abcdef0123"
    assert settings.runner_password == "runner-pass"
    assert settings.runner_configured is True
    assert "runner-pass" not in repr(
        settings
    ) and "file-secret-key-0123456789abcdef0123" not in repr(settings)


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


@pytest.mark.parametrize(
    ("extra", "complaint"),
    [
        ({"RESPAWN_SECRET_KEY": "k" * 31}, "RESPAWN_SECRET_KEY: needs at least 32"),
        ({"RESPAWN_API_TOKENS": "a" * 15}, "RESPAWN_API_TOKENS: each token needs at least 16"),
        ({"RESPAWN_CALLBACK_TOKENS": "c" * 15}, "RESPAWN_CALLBACK_TOKENS: each token"),
        ({"RESPAWN_TRUSTED_PROXIES": "10.0.0.0/8,proxy"}, "RESPAWN_TRUSTED_PROXIES: 'proxy'"),
        ({"RESPAWN_CALLBACK_ALLOW_FROM": "300.1.1.1"}, "RESPAWN_CALLBACK_ALLOW_FROM"),
        ({"RESPAWN_PROXY_HOPS": "0"}, "RESPAWN_PROXY_HOPS"),
    ],
)
def test_weak_or_malformed_security_settings_are_refused(
    extra: dict[str, str], complaint: str
) -> None:
    with pytest.raises(ConfigError, match=complaint):
        load_settings({**BASE, **extra})


def test_network_settings_are_lists() -> None:
    settings = load_settings(
        {**BASE, "RESPAWN_TRUSTED_PROXIES": "10.0.0.0/8, 192.168.1.5",
         "RESPAWN_ALLOWED_HOSTS": "respawn.example.com,localhost"}
    )  # fmt: skip

    assert settings.trusted_proxies == ("10.0.0.0/8", "192.168.1.5")
    assert settings.allowed_hosts == ("respawn.example.com", "localhost")


def test_the_readme_documents_every_setting() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()

    missing = [name for name in config_module._ENV if f"`{name}`" not in readme]

    assert missing == []
