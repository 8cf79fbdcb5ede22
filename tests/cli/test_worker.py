"""`respawn worker` as an operator starts it."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from app.cli import main


def test_worker_without_runner_credentials_refuses_to_start(
    database_url: str, policy_file: Path
) -> None:
    env = {
        "RESPAWN_DATABASE_URL": database_url,
        "RESPAWN_SECRET_KEY": "worker-test-secret-key-0123456789abcdef",
        "RESPAWN_CALLBACK_TOKENS": "callback-token-0123456789",
        "RESPAWN_POLICY_FILE": str(policy_file),
    }

    result = CliRunner().invoke(main, ["worker"], env=env)

    assert result.exit_code == 1
    assert "no Runner credentials" in result.output
    assert "RESPAWN_RUNNER_TOKEN" in result.output
