"""The web worker's garbage collector, paced by a clock (app/collector.py)."""

from __future__ import annotations

import gc
import subprocess
import sys
import textwrap
import weakref
from pathlib import Path

import pytest

from app.collector import PacedCollector

PROJECT = Path(__file__).resolve().parents[1]


class Node:
    def __init__(self) -> None:
        self.me = self  # a cycle: only the collector frees it


def test_a_round_frees_cycles_and_every_nth_is_a_full_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    node = Node()
    gone = weakref.ref(node)
    del node
    was_enabled = gc.isenabled()
    gc.disable()  # (this process's collector must not free it first)
    try:
        PacedCollector().collect()
        assert gone() is None
    finally:
        if was_enabled:
            gc.enable()

    generations: list[int] = []
    monkeypatch.setattr(gc, "collect", lambda generation=2: generations.append(generation) or 0)
    collector = PacedCollector(full_every=3)
    for _ in range(6):
        collector.collect()
    assert generations == [1, 1, 2, 1, 1, 2]


def test_a_started_worker_collects_on_its_clock_only() -> None:
    """In a process of its own (it turns this process's collection off for good)."""
    script = textwrap.dedent(
        """
        import gc, time, weakref
        from app.collector import PacedCollector

        class Node:
            def __init__(self):
                self.me = self

        PacedCollector(young_seconds=0.05).start()
        assert not gc.isenabled()
        assert gc.get_freeze_count() > 0
        refs = [weakref.ref(Node()) for _ in range(10_000)]  # more than any threshold
        deadline = time.monotonic() + 10
        while any(ref() is not None for ref in refs) and time.monotonic() < deadline:
            time.sleep(0.01)
        print("freed" if all(ref() is None for ref in refs) else "kept")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=PROJECT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "freed"
