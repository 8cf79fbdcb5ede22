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
@click.option("--bind", default="127.0.0.1:8000", show_default=True)
@click.option("--workers", type=int, default=None, help="gunicorn workers (default: 2)")
def serve(bind: str, workers: int | None) -> None:
    """Serve the receiver, API and UI with gunicorn (config: app/gunicorn_conf.py)."""
    settings_from_env()  # refuse to start with a message rather than in every worker
    # One metrics directory per instance, shared by its workers (app/metrics.py): the one
    # named, or a fresh one, removed again when gunicorn exits.
    if not os.environ.get("RESPAWN_METRICS_DIR"):
        os.environ["RESPAWN_METRICS_DIR"] = tempfile.mkdtemp(prefix="respawn-metrics-")
        os.environ["RESPAWN_METRICS_DIR_OWNED"] = "1"
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = os.environ["RESPAWN_METRICS_DIR"]
    argv = [sys.executable, "-m", "gunicorn", "-c", str(GUNICORN_CONF), "--bind", bind]
    if workers is not None:
        argv += ["--workers", str(workers)]
    argv.append("app:create_app()")
    os.execv(sys.executable, argv)  # noqa: S606  (replaces this process with gunicorn)
