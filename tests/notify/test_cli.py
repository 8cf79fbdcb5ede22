"""`respawn notify test CHANNEL`, run as an operator runs it: it sends a test message on one
channel with the secrets the service would use and prints the receiver's answer."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from app.cli import main
from tests.helpers import cli_env
from tests.notify.conftest import BASE_POLICY, PLANTED, PUBLIC_URL, Receivers


@pytest.fixture
def env(receivers: Receivers, policy_file: Path, tmp_path: Path) -> dict[str, str]:
    policy_file.write_text(BASE_POLICY + receivers.notify_yaml())
    return cli_env(
        f"sqlite:///{tmp_path / 'unused.db'}",
        policy_file,
        RESPAWN_PUBLIC_URL=PUBLIC_URL,
        # The secrets as the service reads them: from its environment.
        **{
            k: os.environ[k]
            for k in ("TEST_WEBHOOK_SECRET", "TEST_SLACK_URL", "TEST_SMTP_PASSWORD")
        },
    )


def respawn(env: dict[str, str], *args: str) -> Result:
    return CliRunner().invoke(main, list(args), env=env)


def test_a_test_message_on_a_webhook_prints_the_receivers_answer(
    env: dict[str, str], receivers: Receivers
) -> None:
    receivers.hook.answer = "thanks, respawn: message filed as #4711"

    result = respawn(env, "notify", "test", "oncall")

    assert result.exit_code == 0, result.output
    assert result.output == "oncall: sent: HTTP 200: thanks, respawn: message filed as #4711\n"
    (got,) = receivers.hook.unique()
    assert got.verified is True and got.webhook_id and got.webhook_id.startswith("msg_test_")
    assert got.json["type"] == "test"
    assert got.json["summary"] == "a test message from respawn to channel oncall"


def test_a_test_message_on_slack_and_by_mail(env: dict[str, str], receivers: Receivers) -> None:
    slack = respawn(env, "notify", "test", "chat")
    mail = respawn(env, "notify", "test", "mail")

    assert slack.output == "chat: sent: HTTP 200: ok\n"
    (message,) = receivers.hook.accepted("/services/")
    assert message.json["text"] == "Test message: a test message from respawn to channel chat"
    assert mail.output == f"mail: sent: accepted by 127.0.0.1:{receivers.smtp.port}\n"
    (got,) = receivers.smtp.mails
    assert (
        got.message["Subject"]
        == "[respawn] Test message: a test message from respawn to channel mail"
    )
    assert got.plain.splitlines() == ["a test message from respawn to channel mail", ""]
    assert not any(secret in slack.output + mail.output for secret in PLANTED)


@pytest.mark.parametrize(("status", "outcome"), [(500, "retry"), (403, "failed")])
def test_a_refusal_is_printed_and_exits_1(
    env: dict[str, str], receivers: Receivers, status: int, outcome: str
) -> None:
    receivers.hook.fail(1, status=status)

    result = respawn(env, "notify", "test", "oncall")

    assert result.exit_code == 1
    assert result.output == f"oncall: {outcome}: HTTP {status}: receiver failed ({status})\n"


def test_an_unknown_channel_names_the_ones_there_are(env: dict[str, str]) -> None:
    result = respawn(env, "notify", "test", "pager")

    assert result.exit_code == 1
    assert result.output == (
        "pager: failed: no channel 'pager' in the policy (channels: oncall, chat, mail)\n"
    )


def test_a_secret_not_set_is_named_not_shown(env: dict[str, str]) -> None:
    del env["TEST_SLACK_URL"]
    env["TEST_SLACK_URL"] = ""

    result = respawn(env, "notify", "test", "chat")

    assert result.exit_code == 1
    assert result.output == (
        "chat: failed: TEST_SLACK_URL is not set (the environment variable the policy names)\n"
    )


def test_another_policy_file_and_its_mistakes_at_file_line(
    env: dict[str, str], tmp_path: Path, receivers: Receivers
) -> None:
    other = tmp_path / "other.yaml"
    other.write_text(
        "version: 1\nnotify:\n  channels:\n    chat: {type: slack, url: TEST_SLACK_URL}\n"
        "  default: [chta]\n"
    )

    result = respawn(env, "notify", "test", "chat", "--policy", str(other))

    assert result.exit_code == 1
    assert "the policy file is invalid:" in result.output
    assert f"{other}:5: notify.default: no channel named 'chta' (did you mean 'chat'?)" in (
        result.output
    )
    other.write_text(
        "version: 1\nnotify:\n  channels:\n    chat: {type: slack, url: TEST_SLACK_URL}\n"
        "  default: [chat]\n"
    )
    assert respawn(env, "notify", "test", "chat", "--policy", str(other)).exit_code == 0
    assert len(receivers.hook.accepted("/services/")) == 1
