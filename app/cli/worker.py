"""`respawn worker`: dispatcher and reconciler threads, no HTTP."""

from __future__ import annotations

import signal
import threading

import click

from app.cli.common import runtime_from_env
from app.dispatcher import start_background


@click.command("worker")
@click.option(
    "--dispatchers",
    type=int,
    default=2,
    show_default=True,
    help="dispatcher threads in this process",
)
@click.option("--no-reconcile", is_flag=True, help="do not run the reconciler here")
def worker(dispatchers: int, no_reconcile: bool) -> None:
    """Run the dispatcher and reconciler (no HTTP) until SIGTERM or Ctrl-C."""
    with runtime_from_env() as runtime:
        background = start_background(runtime, dispatchers=dispatchers, reconcile=not no_reconcile)
        if not background.dispatchers:
            background.stop()
            raise click.ClickException(
                "no Runner credentials: set RESPAWN_RUNNER_TOKEN or "
                "RESPAWN_RUNNER_USERNAME/PASSWORD"
            )
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        click.echo(
            f"respawn worker: {dispatchers} dispatcher(s), "
            f"reconciler {'off' if no_reconcile else 'on'}"
        )
        stop.wait()
