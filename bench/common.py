"""What every benchmark shares: interleaved timing, tables, throwaway databases, app builder.

Every figure is reported against a baseline measured in the same run, because the machine
is shared and noisy: absolute numbers drift from run to run, ratios much less. Subjects are
timed in interleaved rounds (baseline, subject, baseline, subject, ...) with the order
rotated each round, so a burst of load from a neighbour hits them all alike.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import os
import re
import shutil
import socket
import statistics
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flask import Flask
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url

from app import create_app, migrate
from app.extensions import get_runtime

PROJECT = Path(__file__).resolve().parents[1]
DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
CALLBACK_TOKEN = "bench-callback-token-0123456789"
API_TOKEN = "bench-api-token-0123456789"
PROJECT_POLICY = PROJECT / "policy.yaml"
# Restart every failure at once, no budgets, no breaker: nothing but the work itself.
OPEN_POLICY = (
    "version: 1\n"
    "defaults: {backoff: {initial: 0s}, max_restarts: 5}\n"
    "limits: {per_job: null, per_account: null, global: null, per_host: null}\n"
    "circuit_breaker: null\n"
)


# --- loopback only --------------------------------------------------------------------------

_real_connect = socket.socket.connect


def _loopback_connect(self: socket.socket, address: Any) -> Any:
    if self.family in (socket.AF_INET, socket.AF_INET6):
        host = address[0]
        try:
            loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise ConnectionRefusedError(f"benchmarks may not connect to {host!r}")
    return _real_connect(self, address)


def guard_loopback() -> None:
    """Refuse Python-level connections beyond 127.0.0.1 (libpq is checked by URL instead)."""
    socket.socket.connect = _loopback_connect  # type: ignore[method-assign]


def free_port() -> int:
    """A free loopback port for a server of ours (a small race, fine on a test box)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def require_loopback_url(url: str) -> None:
    host = make_url(url).host or "localhost"
    if host != "localhost" and not ipaddress.ip_address(host).is_loopback:
        raise SystemExit(f"refusing a database beyond loopback: {host}")


# --- timing ---------------------------------------------------------------------------------


@dataclass
class Sample:
    """Chunks of work of one subject: how many units each did and how long it took."""

    name: str
    units: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)

    def add(self, units: float, seconds: float) -> None:
        self.units.append(units)
        self.seconds.append(seconds)

    @property
    def per_unit(self) -> list[float]:
        return [s / u for s, u in zip(self.seconds, self.units, strict=True) if u]

    @property
    def total_units(self) -> float:
        return sum(self.units)

    @property
    def rate(self) -> float:
        """Units per second over all chunks."""
        total = sum(self.seconds)
        return self.total_units / total if total else math.nan

    @property
    def median(self) -> float:
        """Median seconds per unit."""
        return statistics.median(self.per_unit) if self.per_unit else math.nan

    @property
    def p95(self) -> float:
        return percentile(self.per_unit, 95)


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (no interpolation: with few samples it is an observed value)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def ratio(sample: Sample, baseline: Sample) -> float:
    """Cost per unit relative to the baseline's: the median of per-round ratios when rounds
    pair up (robust to load that comes and goes), else the ratio of medians."""
    own, base = sample.per_unit, baseline.per_unit
    if len(own) == len(base) and own:
        return statistics.median(a / b for a, b in zip(own, base, strict=True) if b)
    return sample.median / baseline.median if baseline.median else math.nan


def interleave(
    subjects: Mapping[str, Callable[[int], float | tuple[float, float]]],
    rounds: int,
    budget_seconds: float | None = None,
    min_rounds: int = 3,
) -> dict[str, Sample]:
    """Run each subject once per round (order rotated per round); each returns units done,
    or (units, seconds) when it times only part of its work itself (setup excluded).

    Stops early, after at least `min_rounds`, once `budget_seconds` have passed.
    """
    names = list(subjects)
    samples = {name: Sample(name) for name in names}
    started = time.perf_counter()
    for index in range(rounds):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            begin = time.perf_counter()
            done = subjects[name](index)
            elapsed = time.perf_counter() - begin
            if isinstance(done, tuple):
                samples[name].add(*done)
            else:
                samples[name].add(done, elapsed)
        over = budget_seconds is not None and time.perf_counter() - started > budget_seconds
        if over and index + 1 >= min_rounds:
            break
    return samples


# --- output ---------------------------------------------------------------------------------


_NUMBER = re.compile(r"^[~<>-]?[\d.]")


def table(
    title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]], note: str = ""
) -> None:
    """Print a small aligned table (numbers right-aligned) under a title."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        out = []
        for i, cell in enumerate(row):
            numeric = i > 0 and _NUMBER.match(cell) is not None
            out.append(cell.rjust(widths[i]) if numeric else cell.ljust(widths[i]))
        return "  ".join(out).rstrip()

    print(f"\n{title}")
    print(line(cells[0]))
    print("  ".join("-" * w for w in widths))
    for row in cells[1:]:
        print(line(row))
    if note:
        for part in note.splitlines():
            print(f"  {part}")


def ms(seconds: float) -> str:
    if math.isnan(seconds):
        return "-"
    value = seconds * 1000
    return f"{value:.2f}" if value < 10 else f"{value:.1f}" if value < 100 else f"{value:.0f}"


def us(seconds: float) -> str:
    if math.isnan(seconds):
        return "-"
    value = seconds * 1e6
    return f"{value:.2f}" if value < 10 else f"{value:.1f}" if value < 1000 else f"{value:.0f}"


def times(value: float) -> str:
    if math.isnan(value):
        return "-"
    return f"{value:.2f}x" if value < 10 else f"{value:.1f}x" if value < 100 else f"{value:.0f}x"


def per_second(value: float) -> str:
    if math.isnan(value):
        return "-"
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


# --- databases ------------------------------------------------------------------------------


class Databases:
    """Throwaway migrated databases: SQLite files under `folder`, PostgreSQL databases named
    respawn_bench_<hex> cloned from a template migrated once; all removed by `close()`."""

    def __init__(self, folder: Path, postgres_url: str | None) -> None:
        self.folder = folder
        self._admin: Engine | None = None
        self._template: str | None = None
        self._created: list[str] = []
        self._sqlite_template: Path | None = None
        self.postgres_note = "not configured (--no-postgres)"
        if postgres_url:
            require_loopback_url(postgres_url)
            self._admin_url = make_url(postgres_url)
            engine = create_engine(self._admin_url, isolation_level="AUTOCOMMIT")
            try:
                with engine.connect() as connection:
                    version = connection.execute(text("SHOW server_version")).scalar()
                self._admin = engine
                self.postgres_note = f"PostgreSQL {version}"
            except Exception as exc:  # noqa: BLE001  (any failure to connect means: no server)
                engine.dispose()
                self.postgres_note = f"unreachable ({type(exc).__name__}); PostgreSQL skipped"

    @property
    def kinds(self) -> list[str]:
        return ["sqlite", "postgres"] if self._admin is not None else ["sqlite"]

    def create(self, kind: str) -> str:
        """A fresh database at the migrations' head; its URL."""
        if kind == "sqlite":
            if self._sqlite_template is None:
                self._sqlite_template = self.folder / "template.db"
                migrate.upgrade(f"sqlite:///{self._sqlite_template}")
            path = self.folder / f"bench-{uuid.uuid4().hex[:10]}.db"
            shutil.copy(self._sqlite_template, path)
            return f"sqlite:///{path}"
        if self._admin is None:
            raise RuntimeError("PostgreSQL is not available")
        if self._template is None:
            self._template = self._create_database()
            migrate.upgrade(self._url_for(self._template))
        return self._url_for(self._create_database(self._template))

    def drop(self, url: str) -> None:
        parsed = make_url(url)
        if parsed.get_backend_name() == "sqlite":
            for suffix in ("", "-wal", "-shm"):
                Path(f"{parsed.database}{suffix}").unlink(missing_ok=True)
            return
        name = parsed.database
        if self._admin is not None and name in self._created:
            with self._admin.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            self._created.remove(name)

    @contextmanager
    def database(self, kind: str) -> Iterator[str]:
        url = self.create(kind)
        try:
            yield url
        finally:
            self.drop(url)

    def close(self) -> None:
        if self._admin is None:
            return
        for name in [*self._created]:
            self.drop(self._url_for(name))
        self._admin.dispose()

    def _url_for(self, name: str) -> str:
        return self._admin_url.set(database=name).render_as_string(hide_password=False)

    def _create_database(self, template: str | None = None) -> str:
        assert self._admin is not None
        name = f"respawn_bench_{uuid.uuid4().hex[:12]}"
        clause = f' TEMPLATE "{template}"' if template else ""
        with self._admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"{clause}'))
        self._created.append(name)
        return name


# --- the app --------------------------------------------------------------------------------


def app_settings(database_url: str, policy_file: Path, **overrides: Any) -> dict[str, Any]:
    """Settings as the tests use them: dispatcher off, quiet logs, bench tokens."""
    settings: dict[str, Any] = {
        "database_url": database_url,
        "callback_tokens": (CALLBACK_TOKEN,),
        "api_tokens": (API_TOKEN,),
        "testing": True,
        "dispatcher": "off",
        "policy_file": str(policy_file),
        "policy_check_interval": 3600.0,
        "secure_cookies": False,
        "log_level": "WARNING",
        # In-process benchmarks read back what they post (the wrk benchmark in
        # bench/ingest.py measures the default, durable answers).
        "callback_ack": "processed",
    }
    settings.update(overrides)
    return settings


def make_app(database_url: str, policy_file: Path, instance: Path, **overrides: Any) -> Flask:
    app = create_app(app_settings(database_url, policy_file, **overrides))
    app.instance_path = str(instance)
    return app


def close_app(app: Flask) -> None:
    get_runtime(app).close()


@contextmanager
def running_app(
    database_url: str, policy_file: Path, instance: Path, **overrides: Any
) -> Iterator[Flask]:
    app = make_app(database_url, policy_file, instance, **overrides)
    try:
        yield app
    finally:
        close_app(app)


def quiet_logs() -> None:
    """The app logs at WARNING; keep werkzeug's and alembic's chatter out of the tables."""
    for name in ("alembic", "werkzeug", "app"):
        logging.getLogger(name).setLevel(logging.WARNING)


@dataclass
class Context:
    """What a benchmark is given: the run's size, databases and a scratch folder."""

    quick: bool
    databases: Databases
    scratch: Path
    show_sql: bool = False
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))

    def size(self, full: Any, quick: Any) -> Any:
        return quick if self.quick else full

    def folder(self, name: str) -> Path:
        path = self.scratch / name
        path.mkdir(parents=True, exist_ok=True)
        return path
