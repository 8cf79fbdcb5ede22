"""Slow clients against the shipped server configuration (`respawn serve`, app/serving.py):
256 connections sending their request head a line at a time hold no thread, so `/healthz`
and the Runner's callbacks are answered while they dawdle, on either database."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
import requests

from tests.feed import event
from tests.system.processes import TOKEN, base_env, serve

pytestmark = pytest.mark.slow
SLOW_CLIENTS = 256
# Far above what is expected (milliseconds), far below what a starved server takes (forever).
PATIENCE = 5.0


def test_slow_clients_do_not_starve_healthz_or_callbacks(database_url: str, tmp_path: Path) -> None:
    env = base_env(database_url, tmp_path, RESPAWN_DISPATCHER="off")
    with serve(env, tmp_path) as served:
        port = int(served.base.rsplit(":", 1)[1])
        slow = []
        try:
            for _ in range(SLOW_CLIENTS):
                sock = socket.create_connection(("127.0.0.1", port), timeout=10)
                sock.sendall(f"POST /callbacks/{TOKEN} HTTP/1.1\r\nHost: x\r\n".encode())
                slow.append(sock)
            answered = []
            for round_ in range(3):
                for sock in slow:
                    sock.sendall(b"X-Slowly: 1\r\n")  # one more line, never the end
                health = requests.get(f"{served.base}/healthz", timeout=PATIENCE)
                callback = requests.post(
                    f"{served.base}/callbacks/{TOKEN}",
                    json=event("runner_on_ok", int(time.time() * 1000), "web1",
                               event_id=f"slow-{round_}"),
                    timeout=PATIENCE,
                )  # fmt: skip
                answered.append((health.status_code, callback.status_code))
                time.sleep(0.5)
        finally:
            for sock in slow:
                sock.close()
    assert answered == [(200, 202)] * 3
