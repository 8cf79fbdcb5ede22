"""`respawn simulator`: the Runner stand-in on a local port (see docs/simulator.md)."""

from __future__ import annotations

import json
import logging
import secrets
from typing import Any

import click

from app.simulator.ansible_engine import AnsibleNotInstalled
from app.simulator.app import SimulatorServer
from app.simulator.config import ENGINES, HOLD_STAGES, SettingsError, SimulatorConfig
from app.simulator.scripts import ScriptError, parse_script


def _script_rule(text: str) -> tuple[str, Any]:
    glob, sep, script = text.partition("=")
    if not sep or not glob.strip():
        raise click.BadParameter(f"{text!r}: expected HOST_GLOB=SCRIPT, e.g. 'web*=flaky:0.3'")
    try:
        parse_script(script)
    except ScriptError as exc:
        raise click.BadParameter(f"{text!r}: {exc}") from None
    return glob.strip(), script.strip()


@click.command("simulator")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", default=5050, show_default=True, type=int)
@click.option("--seed", type=int, default=None, help="Seed for ids, flaky hosts and faults.")
@click.option(
    "--speed",
    type=float,
    default=1.0,
    show_default=True,
    help="Ticks per second (a run takes ~7 ticks); 0 stops the clock.",
)
@click.option("--username", default="user@example.com", show_default=True)
@click.option(
    "--password",
    envvar="RESPAWN_SIM_PASSWORD",
    default=None,
    help="Login password (env RESPAWN_SIM_PASSWORD); a random one is printed if unset.",
)
@click.option("--account", default="XXXX", show_default=True, help="Account alias of the user.")
@click.option("--token-ttl", type=float, default=14 * 24 * 3600.0, help="Token lifetime, s.")
@click.option("--max-running", type=int, default=4, show_default=True, help="Per account.")
@click.option(
    "--script",
    "scripts",
    multiple=True,
    metavar="GLOB=SCRIPT",
    help="Host script for hosts matching GLOB, e.g. 'db*=fail_first:2' (repeatable).",
)
@click.option("--error-rate", type=float, default=0.0, help="Share of API calls answered 5xx.")
@click.option("--error-status", type=click.Choice(["500", "502", "503", "504"]), default="503")
@click.option("--latency-ms", type=int, default=0, help="Added to every API answer.")
@click.option("--hang-rate", type=float, default=0.0, help="Share of API calls that hang.")
@click.option("--hang-seconds", type=float, default=30.0, show_default=True)
@click.option("--drop-callbacks", type=float, default=0.0, help="Share of callbacks dropped.")
@click.option("--duplicate-callbacks", type=float, default=0.0, help="Share sent twice.")
@click.option("--reorder-callbacks", type=float, default=0.0, help="Share sent late.")
@click.option("--hold-restart", type=click.Choice(list(HOLD_STAGES)), default=None)
@click.option(
    "--legacy-shape",
    is_flag=True,
    help="Answer executions with top-level start/end and an id instead of timers.",
)
@click.option(
    "--allow-remote-callbacks",
    is_flag=True,
    help="Also POST callbacks to non-loopback URLs (off: only 127.0.0.1/::1/localhost).",
)
@click.option(
    "--engine",
    type=click.Choice(list(ENGINES)),
    default="scripted",
    show_default=True,
    help="What runs a play: host scripts, or real ansible-playbook (needs ansible-core).",
)
@click.option(
    "--execution-get-404",
    is_flag=True,
    help="Variant: GET of one execution answers 404 (the executions lists still work).",
)
@click.option("--lists-oldest-first", is_flag=True, help="Variant: executions lists oldest first.")
@click.option(
    "--expire-runs",
    is_flag=True,
    help="Variant: a run longer than its job's executionTtl (simulated minutes) ends EXPIRED.",
)
@click.option(
    "--timestamps-in-seconds",
    is_flag=True,
    help="Variant: status events' timestamp in epoch seconds instead of milliseconds.",
)
@click.option(
    "--status-page/--status-array",
    default=None,
    help="Variant: the status API always answers a page / always a bare array "
    "(default: a page only when page or size is given).",
)
def simulator_command(
    host: str,
    port: int,
    seed: int | None,
    speed: float,
    username: str,
    password: str | None,
    account: str,
    token_ttl: float,
    max_running: int,
    scripts: tuple[str, ...],
    error_rate: float,
    error_status: str,
    latency_ms: int,
    hang_rate: float,
    hang_seconds: float,
    drop_callbacks: float,
    duplicate_callbacks: float,
    reorder_callbacks: float,
    hold_restart: str | None,
    legacy_shape: bool,
    allow_remote_callbacks: bool,
    engine: str,
    execution_get_404: bool,
    lists_oldest_first: bool,
    expire_runs: bool,
    timestamps_in_seconds: bool,
    status_page: bool | None,
) -> None:
    """Run a local stand-in for the Runner API: login, jobs, executions, restart, callbacks."""
    generated = password is None
    if password is None:
        password = secrets.token_urlsafe(12)
    faults = {
        "error_rate": error_rate,
        "error_status": int(error_status),
        "latency_ms": latency_ms,
        "hang_rate": hang_rate,
        "hang_seconds": hang_seconds,
        "drop_callbacks": drop_callbacks,
        "duplicate_callbacks": duplicate_callbacks,
        "reorder_callbacks": reorder_callbacks,
        "hold_restart": hold_restart,
    }
    try:
        config = SimulatorConfig.single_user(
            username,
            password,
            account.upper(),
            seed=seed,
            speed=speed,
            token_ttl=token_ttl,
            max_running_per_account=max_running,
            execution_shape="legacy" if legacy_shape else "timers",
            allow_remote_callbacks=allow_remote_callbacks,
            host_scripts=tuple(_script_rule(s) for s in scripts),
            faults=faults,
            engine=engine,
            execution_get_404=execution_get_404,
            lists_oldest_first=lists_oldest_first,
            expire_runs=expire_runs,
            timestamps_in_seconds=timestamps_in_seconds,
            status_page=status_page,
        )
        server = SimulatorServer(config, host=host, port=port)
    except (SettingsError, ScriptError, AnsibleNotInstalled) as exc:
        raise click.UsageError(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc}") from None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    click.echo(
        f"Runner simulator on {server.url} "
        f"(seed {server.simulator.seed}, speed {speed}, engine {engine})"
    )
    click.echo(f"  RESPAWN_RUNNER_API_URL={server.url}")
    click.echo(f"  RESPAWN_RUNNER_AUTH_URL={server.auth_url}")
    click.echo(f"  RESPAWN_RUNNER_USERNAME={username}")
    if generated:
        click.echo(f"  RESPAWN_RUNNER_PASSWORD={password}   (generated; set --password to fix it)")
    click.echo(f"  account {account.upper()}; control API: {server.url}/_sim/state")
    active = {k: v for k, v in faults.items() if v and k != "hang_seconds" and k != "error_status"}
    if active:
        click.echo(f"  faults: {json.dumps(active)}")
    variants = {k: v for k, v in config.variants().as_dict().items() if v}
    if status_page is False:
        variants["status_page"] = False
    if variants:
        click.echo(f"  variants: {json.dumps(variants)}")
    if host not in ("127.0.0.1", "::1", "localhost"):
        click.echo("  warning: listening beyond loopback; the control API still refuses it")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        click.echo("simulator stopped")
