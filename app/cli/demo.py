"""`respawn demo` (what `make run` runs)."""

from __future__ import annotations

from pathlib import Path

import click

from app.cli.common import instance_path
from app.demo import DemoOptions, run_demo


@click.command("demo")
@click.option("--port", default=8000, show_default=True, help="receiver, API and admin UI")
@click.option("--simulator-port", default=5050, show_default=True, help="the Runner simulator")
@click.option("--speed", default=1.0, show_default=True, help="simulator ticks per second")
@click.option("--seed", type=int, default=None, help="make the fleet's failures repeatable")
@click.option("--every", default=20.0, show_default=True, help="seconds between new executions")
@click.option(
    "--instance",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="folder of the demo's database (default: the instance folder)",
)
def demo(
    port: int,
    simulator_port: int,
    speed: float,
    seed: int | None,
    every: float,
    instance: Path | None,
) -> None:
    """Simulator + receiver + dispatcher + admin UI on SQLite, with a scripted flaky fleet."""
    folder = instance if instance is not None else Path(instance_path())
    run_demo(DemoOptions(port, simulator_port, speed, seed, every, folder))
