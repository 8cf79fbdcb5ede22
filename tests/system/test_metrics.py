"""Metrics under `respawn serve` with two workers: every scrape counts every process of the
instance, so after N callbacks each scrape, whichever worker answers it, says N."""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from tests.feed import event
from tests.system.processes import TOKEN, base_env, migrate_cli, serve

pytestmark = pytest.mark.slow
CALLBACKS = 100


def sample(text: str, name: str, labels: str = "") -> float:
    """One sample's value in the exposition text (0 when absent)."""
    pattern = rf"^{re.escape(name)}{re.escape(labels)} ([0-9.e+]+)$"
    found = re.search(pattern, text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def test_every_scrape_counts_every_worker(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'metrics.db'}"
    folder = tmp_path / "metrics"
    folder.mkdir()
    (folder / "counter_999999.db").write_bytes(b"left over from an earlier run")
    env = base_env(
        url,
        tmp_path,
        RESPAWN_DISPATCHER="off",
        RESPAWN_CALLBACK_ACK="processed",
        RESPAWN_METRICS_DIR=str(folder),
    )
    migrate_cli(env)
    with serve(env, tmp_path, workers=2) as served:
        # The server answers once one worker is up; wait for the second to have booted.
        deadline = time.monotonic() + 60
        while len(served.workers()) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(served.workers()) == 2

        def post(n: int) -> int:
            # A connection of its own each time, so both workers take callbacks.
            item = event("runner_on_ok", 1_700_000_000_000 + n, "web1", execution_id=f"m-{n}")
            with requests.Session() as http:
                return http.post(
                    f"{served.base}/callbacks/{TOKEN}", json=item, timeout=10
                ).status_code

        with ThreadPoolExecutor(8) as pool:
            assert set(pool.map(post, range(CALLBACKS))) == {202}

        scrapes = []
        for _ in range(6):
            with requests.Session() as http:
                scrapes.append(http.get(f"{served.base}/metrics", timeout=10).text)
        answered_by = {sample(text, "respawn_events_stored_total") for text in scrapes}
        received = {
            sample(
                text,
                "respawn_events_received_total",
                '{event_type="runner_on_ok",outcome="stored"}',
            )
            for text in scrapes
        }
        callbacks = {
            sample(text, "respawn_callbacks_total", '{outcome="accepted"}') for text in scrapes
        }
        assert answered_by == {float(CALLBACKS)}
        assert received == {float(CALLBACKS)}
        assert callbacks == {float(CALLBACKS)}
        assert all("respawn_processing_lag_seconds_count" in text for text in scrapes)
        # Both workers took callbacks: the sums above are sums, not one worker's share; and
        # what an earlier run left was cleared at start.
        files = {p.name for p in folder.glob("counter_*.db")}
        assert len(files) >= 2 and "counter_999999.db" not in files
