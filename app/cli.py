"""The `respawn` command: a Flask CLI group over `create_app`."""

from __future__ import annotations

import functools
import getpass
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from flask import Flask, current_app

from app.config import ConfigError
from app.policy_commands import backtest_command, check_command, explain_command
from app.simulator.commands import simulator_command


def _make_app() -> Flask:
    from app import create_app
    from app.policy import PolicyError

    try:
        return create_app()
    except ConfigError as exc:
        raise click.ClickException(f"configuration: {exc}") from None
    except PolicyError as exc:
        problems = "\n".join(str(p) for p in exc.problems)
        raise click.ClickException(f"the policy file is invalid:\n{problems}") from None


def with_appcontext(command: Callable[..., Any]) -> Callable[..., Any]:
    """Run the command inside an app built from the environment (settings checked first)."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        app = _make_app()
        try:
            with app.app_context():
                return command(*args, **kwargs)
        finally:
            app.extensions["respawn.engine"].dispose()

    return wrapper


@click.group()
def main() -> None:
    """respawn: restart failed Runner executions by policy."""


@main.group("db")
def db_group() -> None:
    """Database schema."""


@db_group.command("upgrade")
@click.option("--revision", default="head", show_default=True)
def db_upgrade(revision: str) -> None:
    """Run the Alembic migrations up to REVISION (needs only RESPAWN_DATABASE_URL)."""
    from app import migrate
    from app.config import database_url_from_env

    url = database_url_from_env(Flask(__name__.split(".")[0]).instance_path)
    migrate.upgrade(url, revision)
    click.echo(f"database at revision {migrate.current_revision_name(url)}")


@main.command("serve")
@click.option("--bind", default="127.0.0.1:8000", show_default=True)
@click.option("--workers", type=int, default=None, help="gunicorn workers (default: 2)")
def serve(bind: str, workers: int | None) -> None:
    """Serve the receiver, API and UI with gunicorn (config: app/gunicorn_conf.py)."""
    from app.config import load_settings

    try:
        load_settings()
    except ConfigError as exc:
        raise click.ClickException(f"configuration: {exc}") from None
    conf = os.path.join(os.path.dirname(__file__), "gunicorn_conf.py")
    argv = [sys.executable, "-m", "gunicorn", "-c", conf, "--bind", bind]
    if workers is not None:
        argv += ["--workers", str(workers)]
    argv.append("app:create_app()")
    os.execv(sys.executable, argv)  # noqa: S606  (replaces this process with gunicorn)


@main.command("worker")
@click.option(
    "--dispatchers",
    type=int,
    default=2,
    show_default=True,
    help="dispatcher threads in this process",
)
@click.option("--no-reconcile", is_flag=True, help="do not run the reconciler here")
@with_appcontext
def worker(dispatchers: int, no_reconcile: bool) -> None:
    """Run the dispatcher and reconciler (no HTTP) until SIGTERM or Ctrl-C."""
    import signal
    import threading

    from app.dispatcher.worker import start_background

    app = current_app._get_current_object()  # type: ignore[attr-defined]
    background = start_background(app, dispatchers=dispatchers, reconcile=not no_reconcile)
    if background is None:
        raise click.ClickException(
            "no Runner credentials: set RESPAWN_RUNNER_TOKEN or RESPAWN_RUNNER_USERNAME/PASSWORD"
        )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    click.echo(
        f"respawn worker: {dispatchers} dispatcher(s), reconciler {'off' if no_reconcile else 'on'}"
    )
    stop.wait()
    background.stop()


@main.command("demo")
@click.option("--port", default=8000, show_default=True, help="receiver, API and admin UI")
@click.option("--simulator-port", default=5050, show_default=True, help="the Runner simulator")
@click.option("--speed", default=1.0, show_default=True, help="simulator ticks per second")
@click.option("--seed", type=int, default=None, help="make the fleet's failures repeatable")
@click.option("--every", default=20.0, show_default=True, help="seconds between new executions")
def demo(port: int, simulator_port: int, speed: float, seed: int | None, every: float) -> None:
    """Simulator + receiver + dispatcher + admin UI on SQLite, with a scripted flaky fleet."""
    from app.demo import DemoOptions, run_demo

    instance = Path(Flask(__name__.split(".")[0]).instance_path)
    run_demo(DemoOptions(port, simulator_port, speed, seed, every, instance))


@main.group("policy")
def policy_group() -> None:
    """Check, explain and backtest restart policies."""


policy_group.add_command(check_command)
policy_group.add_command(explain_command)
policy_group.add_command(backtest_command)


@main.group("user")
def user_group() -> None:
    """Admin UI users."""


@user_group.command("add")
@click.argument("name")
@click.option("--role", type=click.Choice(["viewer", "operator"]), required=True)
@click.option("--password-stdin", is_flag=True, help="read the password from standard input")
@with_appcontext
def user_add(name: str, role: str, password_stdin: bool) -> None:
    """Create or update user NAME (password from a prompt, or stdin)."""
    from app.users import UserError, save_user

    if password_stdin or not sys.stdin.isatty():
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            raise click.ClickException("the passwords differ")
    try:
        created = save_user(current_app, name, role, password)
    except UserError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{'created' if created else 'updated'} {role} {name}")


main.add_command(simulator_command, "simulator")


def register_app_commands(app: Flask) -> None:
    """Make the commands available as `flask --app app ...` too."""
    for name, command in main.commands.items():
        app.cli.add_command(command, name)


if __name__ == "__main__":
    main()
