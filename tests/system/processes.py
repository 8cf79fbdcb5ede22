"""Real processes for system tests: `respawn serve` under gunicorn, and a private PostgreSQL
cluster the test starts and stops itself (so an outage disturbs nothing else)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

PROJECT = Path(__file__).resolve().parents[2]
TOKEN = "system-test-callback-token-0123"
API_TOKEN = "system-test-api-token-0123456"
REQUIRE_PG = os.environ.get("RESPAWN_REQUIRE_POSTGRES") == "1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(check: object, timeout: float, what: str, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():  # type: ignore[operator]
                return
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


@dataclass
class Served:
    base: str
    process: subprocess.Popen[bytes]
    log: Path

    def workers(self) -> list[int]:
        found = subprocess.run(
            ["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True, check=False
        )
        return [int(pid) for pid in found.stdout.split()]


def base_env(database_url: str, folder: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RESPAWN_")}
    env.update(
        RESPAWN_DATABASE_URL=database_url,
        RESPAWN_SECRET_KEY="system-test-secret-key-0123456789abcdef",
        RESPAWN_CALLBACK_TOKENS=TOKEN,
        RESPAWN_API_TOKENS=API_TOKEN,
        RESPAWN_POLICY_FILE=str(PROJECT / "policy.yaml"),
        RESPAWN_SPOOL_DIR=str(folder / "spool"),
        RESPAWN_LOG_LEVEL="INFO",
        PYTHONPATH=str(PROJECT),
    )
    env.update(extra)
    return env


@contextmanager
def serve(env: dict[str, str], folder: Path, workers: int = 2) -> Iterator[Served]:
    """`respawn serve` (gunicorn, the shipped configuration) until the block ends."""
    port = free_port()
    log = folder / f"serve-{port}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve", "--bind", f"127.0.0.1:{port}",
             "--workers", str(workers)],
            cwd=PROJECT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    served = Served(f"http://127.0.0.1:{port}", process, log)
    try:
        wait_until(
            lambda: requests.get(f"{served.base}/healthz", timeout=2).status_code == 200,
            60,
            f"respawn serve: {log.read_text()[-2000:] if log.exists() else ''}",
        )
        # Every worker, not just the first to answer: connections go to the workers up.
        wait_until(
            lambda: log.read_text().count("Worker ready") >= workers,
            60,
            f"respawn serve's workers: {log.read_text()[-2000:]}",
        )
        yield served
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(40)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def migrate_cli(env: dict[str, str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "db", "upgrade"],
        cwd=PROJECT, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


# --- a private PostgreSQL cluster -------------------------------------------------------------


def _bindir() -> Path | None:
    pg_config = shutil.which("pg_config")
    if pg_config is None:
        return None
    found = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
    path = Path(found.stdout.strip())
    return path if (path / "pg_ctl").is_file() else None


class PrivateCluster:
    """A PostgreSQL cluster of this test's own: initdb, start, stop, start again."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        # initdb refuses root: the cluster belongs to the postgres user, in a folder it owns.
        self.folder = Path(tempfile.mkdtemp(prefix="respawn-pg-"))
        self.data = self.folder / "data"
        self.port = free_port()
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/respawn"
        subprocess.run(["chown", "-R", "postgres:postgres", str(self.folder)], check=True)
        self._as_postgres(
            str(bindir / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
            "--no-sync",
        )  # fmt: skip

    def _as_postgres(self, *argv: str) -> None:
        command = list(argv) if os.geteuid() != 0 else ["runuser", "-u", "postgres", "--", *argv]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stdout + done.stderr

    def start(self) -> None:
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._as_postgres(
            str(self.bindir / "pg_ctl"), "-D", str(self.data), "-o", options, "-w",
            "-l", str(self.folder / "server.log"), "start",
        )  # fmt: skip

    def stop(self) -> None:
        self._as_postgres(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast",
                          "-w", "stop")  # fmt: skip

    def create_database(self) -> None:
        self._as_postgres(str(self.bindir / "createdb"), "-h", "127.0.0.1", "-p",
                          str(self.port), "-U", "postgres", "respawn")  # fmt: skip

    def remove(self) -> None:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", str(self.bindir / "pg_ctl"), "-D",
             str(self.data), "-m", "immediate", "-w", "stop"],
            capture_output=True, check=False, timeout=60,
        )  # fmt: skip
        shutil.rmtree(self.folder, ignore_errors=True)


@contextmanager
def private_cluster() -> Iterator[PrivateCluster]:
    bindir = _bindir()
    can_switch = os.geteuid() != 0 or shutil.which("runuser") is not None
    if bindir is None or not can_switch:
        if REQUIRE_PG:
            pytest.fail("a private PostgreSQL cluster is required but cannot be started here")
        pytest.skip("PostgreSQL server binaries (pg_config --bindir) not available")
    cluster = PrivateCluster(bindir)
    try:
        cluster.start()
        cluster.create_database()
        yield cluster
    finally:
        cluster.remove()
