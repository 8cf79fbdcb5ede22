"""The shipped server configuration (`respawn serve`, app/serving.py) spreads kept-alive
connections over its workers: a burst of new connections, as a proxy or a Runner opening its
pool makes, does not all land on one worker while the others idle. Over real sockets with
two workers, and the accept pause that does it, step by step."""

from __future__ import annotations

import os
import selectors
import socket
import time
from collections import Counter, OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import pytest

from app.serving import ACCEPT_PAUSE, ACCEPT_SPREAD, HeadFirstWorker
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


@contextmanager
def accepting(threads: int, clients: int) -> Iterator[tuple[HeadFirstWorker, socket.socket]]:
    """A HeadFirstWorker's accepting part, without gunicorn's process around it, on a
    listener with `clients` connections waiting; everything closed after."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    worker = HeadFirstWorker.__new__(HeadFirstWorker)
    worker.cfg = SimpleNamespace(threads=threads, is_ssl=False)
    worker.heads = OrderedDict()
    worker.accept_after = 0.0
    worker.nr_conns = 0
    worker.worker_connections = 1000
    worker.poller = selectors.DefaultSelector()
    worker._accepting = False
    worker.sockets = [listener]
    waiting = [socket.create_connection(listener.getsockname()) for _ in range(clients)]
    try:
        yield worker, listener
    finally:
        for sock in waiting:
            sock.close()
        for conn in list(worker.heads.values()):
            conn.sock.close()
        listener.close()
        worker.poller.close()


def test_a_worker_holding_a_connection_per_thread_pauses_before_it_accepts_again() -> None:
    with accepting(threads=2, clients=3) as (worker, listener):
        worker.set_accept_enabled(True)
        worker.accept(listener)
        assert worker._accepting  # one connection for two threads: go on

        worker.accept(listener)  # a connection per thread now
        assert not worker._accepting
        pause = worker.accept_after - time.monotonic()
        assert 0 < pause <= ACCEPT_PAUSE
        worker.set_accept_enabled(True)  # what gunicorn's loop asks while there is room
        assert not worker._accepting, "the pause was cut short"

        worker.wait_for_and_dispatch_events(0.0)
        assert worker.nr_conns == 2, "a connection was accepted during the pause"

        time.sleep(pause + 0.01)
        worker.wait_for_and_dispatch_events(1.0)  # resumes, and the third one is taken
        assert worker.nr_conns == 3, "accepting did not resume after the pause"


def test_the_pause_grows_with_the_connections_held_and_stops_past_a_bound() -> None:
    """Many connections (slow clients, most likely) are accepted without pauses: a
    `/healthz` must not wait behind hundreds of paused accepts."""
    with accepting(threads=1, clients=ACCEPT_SPREAD + 3) as (worker, listener):
        pauses = []
        for _ in range(ACCEPT_SPREAD + 3):
            worker.accept_after = 0.0  # as if each pause had run out
            worker.set_accept_enabled(True)
            worker.accept(listener)
            pauses.append(max(worker.accept_after - time.monotonic(), 0.0))
        growing = pauses[:ACCEPT_SPREAD]
        assert growing == sorted(growing) and growing[0] > 0
        assert max(pauses) <= ACCEPT_PAUSE * ACCEPT_SPREAD
        assert pauses[ACCEPT_SPREAD:] == [0.0] * 3
        assert worker._accepting
