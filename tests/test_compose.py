"""compose.yaml, the worked example of a scaled-out deployment, read against the code: the
settings it sets exist, its commands are `respawn` commands, its image is the Dockerfile's,
the release step runs first, ports and health checks line up, and no secret is a value."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click
import pytest
import yaml

from app.cli import main
from app.config import _ENV

ROOT = Path(__file__).resolve().parents[1]
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
RESPAWN = ("migrate", "web", "worker")
"""The services that run respawn itself, all from the image built from the Dockerfile."""


def argv(service: str) -> list[str]:
    return [str(part) for part in SERVICES[service]["command"]]


def resolve(args: list[str]) -> tuple[click.Command, click.Context]:
    """The `respawn` subcommand `args` names, its options parsed as the CLI would."""
    command: click.Command = main
    ctx = click.Context(main, info_name="respawn")
    while isinstance(command, click.Group):
        name, *args = args
        found = command.get_command(ctx, name)
        assert found is not None, f"no command {name!r} in `respawn`"
        command = found
        ctx = click.Context(command, info_name=name, parent=ctx)
    return command, command.make_context(command.name, list(args), parent=ctx.parent)


def option_value(service: str, name: str) -> Any:
    _, ctx = resolve(argv(service))
    return ctx.params[name]


def known_setting(name: str) -> bool:
    """A RESPAWN_* variable app/config.py reads: a setting, or a secret's `_FILE` form."""
    if name in _ENV:
        return True
    base = name.removesuffix("_FILE")
    return name.endswith("_FILE") and _ENV.get(base, ("", ""))[1].startswith("secret")


def test_every_service_is_defined() -> None:
    assert set(SERVICES) == {"postgres", "migrate", "web", "worker", "simulator"}


@pytest.mark.parametrize("service", [*RESPAWN, "simulator"])
def test_the_respawn_image_builds_from_the_dockerfile(service: str) -> None:
    build = SERVICES[service]["build"]
    assert (ROOT / build["context"] / build["dockerfile"]).resolve() == ROOT / "Dockerfile"
    assert SERVICES[service]["image"] == SERVICES["web"]["image"]
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["respawn"]' in dockerfile
    assert re.search(r"^USER 10001", dockerfile, re.M)  # the image does not run as root


@pytest.mark.parametrize("service", [*RESPAWN, "simulator"])
def test_every_command_is_a_respawn_command(service: str) -> None:
    command, _ = resolve(argv(service))
    assert (
        command.name
        == {
            "migrate": "upgrade",
            "web": "serve",
            "worker": "worker",
            "simulator": "simulator",
        }[service]
    )


def test_the_simulator_runs_respawn_under_its_password_wrapper() -> None:
    entrypoint = SERVICES["simulator"]["entrypoint"]
    assert entrypoint[:2] == ["sh", "-c"] and 'exec respawn "$$@"' in entrypoint[2]
    password = next(p for p in resolve(argv("simulator"))[0].params if p.name == "password")
    assert password.envvar == "RESPAWN_SIM_PASSWORD" and password.envvar in entrypoint[2]
    assert "/run/secrets/runner_password" in entrypoint[2]
    assert "runner_password" in SERVICES["simulator"]["secrets"]


@pytest.mark.parametrize("service", RESPAWN)
def test_every_variable_set_is_a_setting(service: str) -> None:
    environment = SERVICES[service]["environment"]
    unknown = [name for name in environment if not known_setting(name)]
    assert unknown == []
    assert all(name.startswith("RESPAWN_") for name in environment)


@pytest.mark.parametrize("service", RESPAWN)
def test_the_required_settings_are_given(service: str) -> None:
    environment = SERVICES[service]["environment"]
    for name in ("RESPAWN_DATABASE_URL", "RESPAWN_SECRET_KEY", "RESPAWN_CALLBACK_TOKENS"):
        assert name in environment or f"{name}_FILE" in environment


@pytest.mark.parametrize("service", [*SERVICES])
def test_secrets_are_files_never_values(service: str) -> None:
    definition = SERVICES[service]
    environment = definition.get("environment") or {}
    for name, value in environment.items():
        base = name.removesuffix("_FILE")
        secret = _ENV.get(base, ("", ""))[1].startswith("secret") or re.search(
            r"PASSWORD|SECRET|TOKEN", name
        )
        if not secret:
            continue
        assert name.endswith("_FILE"), f"{service}: {name} holds a secret's value"
        folder, _, secret_name = str(value).rpartition("/")
        assert folder == "/run/secrets", f"{service}: {name} is not a compose secret"
        assert secret_name in definition["secrets"], f"{service}: {secret_name} not granted"
    for name in definition.get("secrets", []):
        source = COMPOSE["secrets"][name]
        assert set(source) == {"file"} and source["file"].startswith("./secrets/")
    ignored = (ROOT / ".gitignore").read_text().split()
    assert "secrets/" in ignored  # the files themselves are never committed


def test_web_and_worker_wait_for_the_migrations() -> None:
    assert argv("migrate") == ["db", "upgrade"]
    assert SERVICES["migrate"]["restart"] == "no"
    assert SERVICES["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for service in ("web", "worker"):
        needs = SERVICES[service]["depends_on"]["migrate"]
        assert needs["condition"] == "service_completed_successfully"


def test_web_serves_without_a_dispatcher_and_workers_send_the_restarts() -> None:
    assert SERVICES["web"]["environment"]["RESPAWN_DISPATCHER"] == "off"
    assert option_value("worker", "dispatchers") >= 1
    assert option_value("worker", "no_reconcile") is False
    worker_env = SERVICES["worker"]["environment"]
    assert "RESPAWN_RUNNER_USERNAME" in worker_env
    assert "RESPAWN_RUNNER_PASSWORD_FILE" in worker_env


def test_the_ports_line_up() -> None:
    bind = option_value("web", "bind")
    host, _, port = bind.rpartition(":")
    assert host == "0.0.0.0"  # inside its container, behind the published port
    assert SERVICES["web"]["ports"] == [f"{port}:{port}"]
    health = " ".join(SERVICES["web"]["healthcheck"]["test"])
    assert f"http://127.0.0.1:{port}" in health
    assert "'/healthz'" in health and "'/readyz'" in health

    sim_port = option_value("simulator", "port")
    assert option_value("simulator", "host") == "0.0.0.0"
    assert option_value("simulator", "allow_remote_callbacks") is True  # it calls web back
    for service in ("web", "worker"):
        environment = SERVICES[service]["environment"]
        for name in ("RESPAWN_RUNNER_API_URL", "RESPAWN_RUNNER_AUTH_URL"):
            url = urlsplit(environment[name])
            assert (url.hostname, url.port) == ("simulator", sim_port), name
        assert urlsplit(environment["RESPAWN_RUNNER_AUTH_URL"]).path == ("/v2/authentication/login")
        assert environment["RESPAWN_RUNNER_USERNAME"] == option_value("simulator", "username")
    assert f"http://127.0.0.1:{sim_port}/_sim/health" in " ".join(
        SERVICES["simulator"]["healthcheck"]["test"]
    )


def test_the_health_checks_call_routes_that_exist() -> None:
    views = (ROOT / "app/web/health/views.py").read_text()
    assert '@bp.get("/healthz")' in views and '@bp.get("/readyz")' in views
    assert "pg_isready" in " ".join(SERVICES["postgres"]["healthcheck"]["test"])
    # The worker serves no HTTP: the image's own health check would fail there.
    assert SERVICES["worker"]["healthcheck"] == {"disable": True}


def test_the_policy_and_the_spool_live_outside_the_container() -> None:
    for service in RESPAWN:
        environment = SERVICES[service]["environment"]
        mounts = {m.split(":")[1]: m.split(":")[0] for m in SERVICES[service]["volumes"]}
        source = mounts[environment["RESPAWN_POLICY_FILE"]]
        assert (ROOT / source).is_file()
    spool = SERVICES["web"]["environment"]["RESPAWN_SPOOL_DIR"]
    named = {m.split(":")[1]: m.split(":")[0] for m in SERVICES["web"]["volumes"]}
    assert any(
        spool.startswith(target) and name in COMPOSE["volumes"] for target, name in named.items()
    )
