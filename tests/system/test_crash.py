"""A web worker killed with SIGKILL under load: every callback that was answered 2xx is
stored exactly once, and applied (by the survivors' sweep if its own process died)."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import pytest
import requests

from tests.system.processes import TOKEN, base_env, migrate_cli, serve, wait_until
from tests.system.test_outage import stored_ids, unique_events

pytestmark = pytest.mark.slow


def test_a_worker_killed_under_load_loses_and_doubles_nothing(
    database_url: str, tmp_path: Path
) -> None:
    env = base_env(database_url, tmp_path, RESPAWN_DISPATCHER="off")
    if database_url.startswith("sqlite"):
        migrate_cli(env)  # (PostgreSQL test databases come migrated)
    events = unique_events(2000)
    acknowledged: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    with serve(env, tmp_path) as served:
        url = f"{served.base}/callbacks/{TOKEN}"

        def post(part: list[dict[str, object]]) -> None:
            with requests.Session() as http:
                for item in part:
                    if stop.is_set():
                        return
                    try:
                        response = http.post(url, json=item, timeout=30)
                    except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError):
                        # Its connection was to the killed worker, which died before or
                        # while answering: not counted as acknowledged (if the 202's head
                        # got out, the event is stored; the check below allows for that).
                        continue
                    if response.status_code == 202:
                        with lock:
                            acknowledged.append(str(item["id"]))

        threads = [threading.Thread(target=post, args=(events[n::4],)) for n in range(4)]
        for thread in threads:
            thread.start()
        wait_until(lambda: len(acknowledged) >= 300, 60, "load to build up", 0.02)
        victim = served.workers()[0]
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: len(acknowledged) >= 900, 60, "load after the kill", 0.02)
        stop.set()
        for thread in threads:
            thread.join(60)

        def settled() -> bool:
            ids, pending = stored_ids(database_url)
            return pending == 0 and set(acknowledged) <= set(ids)

        wait_until(settled, 90, "every acknowledged callback to be stored and applied", 0.25)
        assert victim not in served.workers()  # gunicorn replaced the killed worker

    ids, _ = stored_ids(database_url)
    assert len(ids) == len(set(ids))  # nothing stored twice
    assert set(acknowledged) <= set(ids)  # nothing acknowledged was lost
