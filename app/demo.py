"""`respawn demo` (what `make run` runs): the whole loop on one machine, on SQLite.

A Runner simulator with a scripted flaky fleet, respawn's receiver, dispatcher, reconciler
and admin UI, wired together over loopback HTTP exactly as in production: the simulator posts
its live feed to respawn's callback URL, the policy decides, the dispatcher calls the
simulator's restart endpoint. New executions start every few seconds until Ctrl-C.
"""

from __future__ import annotations

import logging
import random
import secrets
import signal
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from flask import Flask
from werkzeug.serving import BaseWSGIServer, make_server

from app import create_app, migrate
from app.core.users import save_user
from app.dispatcher import start_background
from app.extensions import get_runtime
from app.simulator import SimulatorConfig, SimulatorServer

DEMO_ACCOUNT = "DEMO"
DEMO_POLICY = Path(__file__).with_name("demo_policy.yaml")

# A dozen hosts in five jobs; each script makes one kind of failure happen, reproducibly.
FLEET_JOBS: list[dict[str, Any]] = [
    {
        "description": "deploy web tier",
        "hosts": {
            "web1": "ok",
            "web2": {
                "outcome": "unreachable",
                "first": 1,
                "message": "Failed to connect to the host via ssh: Connection timed out",
            },
            "web3": "flaky:0.3",
            "web4": "ok",
        },
    },
    {
        "description": "db-migrate orders schema",
        "hosts": {
            "db1": "ok",
            "db2": {"fail_message": 'psql: ERROR: relation "orders_v2" already exists'},
        },
    },
    {
        "description": "patch cache nodes",
        "hosts": {"cache1": "ok", "cache2": "fail_first:2", "cache3": "unreachable"},
    },
    {
        "description": "rotate worker certificates",
        "hosts": {"worker1": "ok", "worker2": "async_failed_first:1"},
    },
    {"description": "bootstrap vpn gateway", "hosts": {"gw1": "init_failure_first:1"}},
]


@dataclass
class DemoOptions:
    port: int = 8000
    simulator_port: int = 5050
    speed: float = 1.0
    seed: int | None = None
    every: float = 20.0
    instance: Path = Path("instance")


class _Server:
    def __init__(self, server: BaseWSGIServer, name: str) -> None:
        self.server = server
        self.thread = threading.Thread(target=server.serve_forever, name=name, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def build_app(
    options: DemoOptions,
    simulator: SimulatorServer,
    token: str,
    api_token: str,
    runner_password: str,
) -> Flask:
    options.instance.mkdir(parents=True, exist_ok=True)
    database = options.instance / "demo.db"
    for leftover in options.instance.glob("demo.db*"):
        leftover.unlink()
    url = f"sqlite:///{database.resolve()}"
    migrate.upgrade(url)
    return create_app(
        {
            "database_url": url,
            "secret_key": secrets.token_hex(32),
            "callback_tokens": (token,),
            "api_tokens": (api_token,),
            "policy_file": str(DEMO_POLICY),
            "runner_api_url": simulator.url,
            "runner_auth_url": simulator.auth_url,
            "runner_username": "demo@example.com",
            "runner_password": runner_password,
            "reconcile_accounts": (DEMO_ACCOUNT,),
            "reconcile_interval": 30.0,
            "dispatch_interval": 1.0,
            "retry_base_seconds": 2.0,
            "uncertain_retry_seconds": 10.0,
            "secure_cookies": False,
        }
    )


def run_demo(options: DemoOptions) -> None:
    # Every HTTP request of both servers would drown what respawn decides and does.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    token = secrets.token_urlsafe(24)
    api_token = secrets.token_urlsafe(24)
    runner_password = secrets.token_urlsafe(12)
    admin_password = secrets.token_urlsafe(9)
    seed = options.seed if options.seed is not None else random.SystemRandom().randrange(10**6)
    simulator = SimulatorServer(
        SimulatorConfig.single_user(
            "demo@example.com", runner_password, DEMO_ACCOUNT, seed=seed, speed=options.speed
        ),
        port=options.simulator_port,
    ).start()
    servers: list[_Server] = []
    runtime = None
    try:
        app = build_app(options, simulator, token, api_token, runner_password)
        runtime = get_runtime(app)
        with runtime.transaction() as session:
            save_user(session, "admin", "operator", admin_password)
            save_user(session, "viewer", "viewer", admin_password)
        start_background(runtime)
        web = make_server("127.0.0.1", options.port, app, threaded=True)
        servers.append(_Server(web, "respawn-web"))
        callback = f"http://127.0.0.1:{options.port}/callbacks/{token}"
        fleet = simulator.simulator.create_fleet(
            {
                "account": DEMO_ACCOUNT,
                "callbacks": [{"url": callback, "level": "DEBUG"}],
                "jobs": FLEET_JOBS,
            }
        )
        jobs = [job["id"] for job in fleet["jobs"]]
        click.echo(_banner(options, admin_password, api_token, callback, seed))
        _keep_starting(simulator, jobs, options.every, seed)
    finally:
        click.echo("\nstopping respawn demo ...")
        # The simulator first: its runs stop posting callbacks to a receiver about to close.
        simulator.close()
        for server in servers:
            server.close()
        if runtime is not None:
            runtime.close()


def _keep_starting(simulator: SimulatorServer, jobs: list[str], every: float, seed: int) -> None:
    """Start a new execution of a random job every `every` seconds until Ctrl-C or SIGTERM."""
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    rng = random.Random(seed)  # noqa: S311  (repeatable demo schedule, not a secret)
    try:
        while not stop.wait(every):
            simulator.simulator.start_job(DEMO_ACCOUNT, rng.choice(jobs), {})
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)


def _banner(options: DemoOptions, password: str, api_token: str, callback: str, seed: int) -> str:
    return f"""
respawn demo is running (seed {seed})

  admin UI        http://127.0.0.1:{options.port}/admin/
                  operator: admin / {password}
                  viewer:   viewer / {password}
  JSON API        http://127.0.0.1:{options.port}/api/v1/executions
                  Authorization: Bearer {api_token}
  callbacks       {callback}
                  (the fleet's jobs post their status here; so may you)
  Runner (sim)    http://127.0.0.1:{options.simulator_port}
  policy          {DEMO_POLICY.name} (short backoffs so restarts show within a minute)

Five jobs, a dozen hosts: failures arrive within seconds, restarts follow by policy.
A new execution starts every {options.every:.0f} s. Ctrl-C stops everything.
"""
