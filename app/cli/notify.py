"""`respawn notify`: try a notification channel of the policy."""

from __future__ import annotations

from pathlib import Path

import click
import requests

from app.cli.common import settings_from_env
from app.core.policy_source import load_policy_file
from app.notify import Links, send_test
from app.policy import PolicyError


@click.group("notify")
def notify_group() -> None:
    """Notification channels (docs/policy.md, "Notifications")."""


@notify_group.command("test")
@click.argument("channel")
@click.option(
    "--policy",
    "policy_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="the policy file (default: RESPAWN_POLICY_FILE)",
)
def test_command(channel: str, policy_file: Path | None) -> None:
    """Send a test message on CHANNEL now and print the receiver's answer.

    The channel's secrets are read from the environment as the service reads them. Exits 1
    when the message was not accepted.
    """
    settings = settings_from_env()
    path = policy_file or Path(settings.policy_file)
    try:
        policy = load_policy_file(path)
    except PolicyError as exc:
        problems = "\n".join(str(p) for p in exc.problems)
        raise click.ClickException(f"the policy file is invalid:\n{problems}") from None
    with requests.Session() as http:
        result = send_test(policy.notify, channel, Links(settings.public_url), http)
    click.echo(f"{channel}: {result.outcome}: {result.answer}")
    if result.outcome != "sent":
        raise SystemExit(1)
