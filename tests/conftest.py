"""Shared fixtures: real databases built by the migrations, one per test; no outside network.

PostgreSQL tests run when RESPAWN_TEST_POSTGRES_URL names a server (an admin URL, e.g.
postgresql+psycopg://postgres@127.0.0.1:5432/postgres); each test gets a database of its own,
cloned from a template migrated once per run, and dropped after. With
RESPAWN_REQUIRE_POSTGRES=1 an unreachable server fails the run instead of skipping.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import shutil
import socket
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from app import create_app, migrate
from app.extensions import get_runtime

CALLBACK_TOKEN = "test-callback-token-0123456789"
API_TOKEN = "test-api-token-0123456789"
FIXTURES = Path(__file__).resolve().parent / "fixtures"

PG_ADMIN_URL = os.environ.get("RESPAWN_TEST_POSTGRES_URL", "")
REQUIRE_PG = os.environ.get("RESPAWN_REQUIRE_POSTGRES") == "1"


# --- no network but loopback ----------------------------------------------------------------

_real_connect = socket.socket.connect


def _guarded_connect(self: socket.socket, address: Any) -> Any:
    if self.family in (socket.AF_INET, socket.AF_INET6):
        host = address[0]
        try:
            loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise ConnectionRefusedError(f"tests may not connect to {host!r}")
    return _real_connect(self, address)


@pytest.fixture(autouse=True, scope="session")
def _block_network() -> Iterator[None]:
    socket.socket.connect = _guarded_connect  # type: ignore[method-assign]
    yield
    socket.socket.connect = _real_connect  # type: ignore[method-assign]


@pytest.fixture(autouse=True)
def _root_log_level() -> Iterator[None]:
    """Each app a test builds sets the process's root log level from its settings: put it back,
    so a later test's warnings still reach caplog (module-scoped apps put it back themselves)."""
    root = logging.getLogger()
    level = root.level
    yield
    root.setLevel(level)


def fixture_path(name: str) -> Path:
    """A published Runner example shipped under tests/fixtures (see its README)."""
    path = FIXTURES / name
    if not path.is_file():
        raise FileNotFoundError(name)
    return path


# --- databases ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    migrate.upgrade(f"sqlite:///{path}")
    return path


class PostgresServer:
    def __init__(self, admin_url: str) -> None:
        self.admin_url = make_url(admin_url)
        self.engine = create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        self.template: str | None = None

    def url_for(self, name: str) -> str:
        return self.admin_url.set(database=name).render_as_string(hide_password=False)

    def create(self, template: str | None = None) -> str:
        name = f"respawn_test_{uuid.uuid4().hex[:12]}"
        clause = f' TEMPLATE "{template}"' if template else ""
        with self.engine.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"{clause}'))
        return name

    def drop(self, name: str) -> None:
        with self.engine.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    if not PG_ADMIN_URL:
        if REQUIRE_PG:
            pytest.fail("RESPAWN_REQUIRE_POSTGRES=1 but RESPAWN_TEST_POSTGRES_URL is not set")
        pytest.skip("PostgreSQL not configured (RESPAWN_TEST_POSTGRES_URL)")
    server = PostgresServer(PG_ADMIN_URL)
    try:
        with server.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001  (any failure to connect means: no server)
        if REQUIRE_PG:
            pytest.fail(f"PostgreSQL required but unreachable: {type(exc).__name__}")
        pytest.skip("PostgreSQL unreachable")
    server.template = server.create()
    migrate.upgrade(server.url_for(server.template))
    yield server
    server.drop(server.template)
    server.engine.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A freshly migrated database of each kind, private to the test."""
    if request.param == "sqlite":
        path = tmp_path / "respawn.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        yield f"sqlite:///{path}"
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    name = server.create(template=server.template)
    try:
        yield server.url_for(name)
    finally:
        server.drop(name)


@pytest.fixture
def sqlite_url(sqlite_template: Path, tmp_path: Path) -> str:
    path = tmp_path / "respawn.db"
    shutil.copy(sqlite_template, path)
    return f"sqlite:///{path}"


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    """An empty-rules policy: restart failed hosts at once; tests rewrite it as they need."""
    path = tmp_path / "policy.yaml"
    path.write_text("version: 1\ndefaults:\n  backoff: {initial: 0s}\n")
    return path


@pytest.fixture
def make_app(
    database_url: str, policy_file: Path, tmp_path: Path
) -> Iterator[Callable[..., Flask]]:
    apps: list[Flask] = []

    def factory(**overrides: Any) -> Flask:
        settings: dict[str, Any] = {
            "database_url": database_url,
            "callback_tokens": (CALLBACK_TOKEN,),
            "api_tokens": (API_TOKEN,),
            "testing": True,
            "dispatcher": "off",
            "policy_file": str(policy_file),
            "policy_check_interval": 0.0,
            "secure_cookies": False,
            "log_level": "WARNING",
            # Answer once applied, so a test reads what it posted; tests of the intake
            # itself ask for "durable".
            "callback_ack": "processed",
            "spool_dir": str(tmp_path / "spool"),
        }
        settings.update(overrides)
        app = create_app(settings)
        app.instance_path = str(tmp_path / "instance")
        apps.append(app)
        return app

    yield factory
    for app in apps:
        get_runtime(app).close()


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    return make_app()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def api_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {API_TOKEN}"}
