"""`respawn user add`: admin UI users."""

from __future__ import annotations

import getpass
import sys

import click

from app.cli.common import runtime_from_env
from app.core.errors import NotFound
from app.core.users import ROLES, UserError, save_user, set_disabled
from app.db import utcnow


@click.group("user")
def user_group() -> None:
    """Admin UI users."""


@user_group.command("add")
@click.argument("name")
@click.option("--role", type=click.Choice(ROLES), required=True)
@click.option("--password-stdin", is_flag=True, help="read the password from standard input")
def user_add(name: str, role: str, password_stdin: bool) -> None:
    """Create or update user NAME (password from a prompt, or stdin)."""
    if password_stdin or not sys.stdin.isatty():
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            raise click.ClickException("the passwords differ")
    with runtime_from_env() as runtime:
        try:
            with runtime.transaction() as session:
                created = save_user(session, name, role, password)
        except UserError as exc:
            raise click.ClickException(str(exc)) from None
    click.echo(f"{'created' if created else 'updated'} {role} {name}")


@user_group.command("disable")
@click.argument("name")
def user_disable(name: str) -> None:
    """Disable user NAME: every session of it ends at once, and it cannot sign in."""
    _set_disabled(name, True)
    click.echo(f"disabled {name}; its sessions have ended")


@user_group.command("enable")
@click.argument("name")
def user_enable(name: str) -> None:
    """Enable user NAME again."""
    _set_disabled(name, False)
    click.echo(f"enabled {name}")


def _set_disabled(name: str, disabled: bool) -> None:
    with runtime_from_env() as runtime:
        try:
            with runtime.transaction() as session:
                set_disabled(session, name, disabled, "cli", utcnow())
        except NotFound as exc:
            raise click.ClickException(exc.message) from None
