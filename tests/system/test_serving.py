"""The shipped server configuration (`respawn serve`, app/serving.py) spreads kept-alive
connections over its workers: a burst of new connections, as a proxy or a Runner opening its
pool makes, does not all land on one worker while the others idle."""

from __future__ import annotations

import os
import socket
from collections import Counter
from pathlib import Path

import pytest

from tests.system.processes import base_env, migrate_cli, serve

pytestmark = pytest.mark.slow
CONNECTIONS = 16
WORKERS = 2


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _established(port: int) -> set[str]:
    """Socket inodes of the server's side of established connections on `port`."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local_port = int(fields[1].rsplit(":", 1)[1], 16)
        if local_port == port and fields[3] == "01":
            inodes.add(fields[9])
    return inodes


def _holder(workers: list[int], inode: str) -> int | None:
    target = f"socket:[{inode}]"
    for worker in workers:
        for fd in Path(f"/proc/{worker}/fd").iterdir():
            try:
                if os.readlink(fd) == target:
                    return worker
            except OSError:
                continue
    return None


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc")
def test_a_burst_of_keep_alive_connections_is_spread_over_the_workers(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'spread.db'}"
    env = base_env(url, tmp_path, RESPAWN_DISPATCHER="off")
    migrate_cli(env)
    with serve(env, tmp_path, workers=WORKERS) as served:
        port = int(served.base.rsplit(":", 1)[1])
        clients = []
        try:
            for _ in range(CONNECTIONS):
                clients.append(socket.create_connection(("127.0.0.1", port), timeout=10))
            for sock in clients:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            for sock in clients:
                assert sock.recv(65536).startswith(b"HTTP/1.1 200")
            workers = _children(served.process.pid)
            held = Counter(_holder(workers, inode) for inode in _established(port))
        finally:
            for sock in clients:
                sock.close()
    assert len(workers) == WORKERS
    assert sum(held.values()) == CONNECTIONS
    assert None not in held
    # Each worker takes a fair part: at least half its share.
    assert min(held[w] for w in workers) >= CONNECTIONS // WORKERS // 2, held
