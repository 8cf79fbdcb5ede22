"""`respawn serve`: the receiver, API and UI under gunicorn."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import click

from app.cli.common import settings_from_env

GUNICORN_CONF = Path(__file__).resolve().parents[1] / "gunicorn_conf.py"


@click.command("serve")
@click.option(
    "--bind",
    default=None,
    help="address:port to listen on  [default: $RESPAWN_BIND, else 127.0.0.1:8000]",
)
@click.option(
    "--workers",
    type=int,
    default=None,
    help="gunicorn workers  [default: $RESPAWN_WORKERS, else 2]",
)
def serve(bind: str | None, workers: int | None) -> None:
    """Serve the receiver, API and UI with gunicorn (config: app/gunicorn_conf.py)."""
    settings_from_env()  # refuse to start with a message rather than in every worker
    # One metrics directory per instance, shared by its workers (app/metrics.py): the one
    # named (made if missing), or a fresh one, removed again when gunicorn exits.
    named = os.environ.get("RESPAWN_METRICS_DIR")
    if named:
        try:
            Path(named).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise click.ClickException(
                f"RESPAWN_METRICS_DIR {named!r} cannot be made: {exc.strerror}"
            ) from None
    else:
        os.environ["RESPAWN_METRICS_DIR"] = tempfile.mkdtemp(prefix="respawn-metrics-")
        os.environ["RESPAWN_METRICS_DIR_OWNED"] = "1"
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = os.environ["RESPAWN_METRICS_DIR"]
    # Flags win over the settings gunicorn_conf.py reads (RESPAWN_BIND, RESPAWN_WORKERS).
    argv = [sys.executable, "-m", "gunicorn", "-c", str(GUNICORN_CONF)]
    if bind is not None:
        argv += ["--bind", bind]
    if workers is not None:
        argv += ["--workers", str(workers)]
    argv.append("app:create_app()")
    os.execv(sys.executable, argv)  # noqa: S606  (replaces this process with gunicorn)
