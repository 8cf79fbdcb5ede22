"""The benchmarks' own machinery: every benchmark `bench/run.py` names loads, and the ingest
benchmark's CPU accounting puts a thread's CPU where its name says (bench/cpu.py)."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import textwrap

import pytest

from bench import cpu
from bench.run import BENCHMARKS
from tests.test_collector import PROJECT

linux_only = pytest.mark.skipif(not cpu.available(), reason="/proc is Linux's")


@pytest.mark.parametrize("name", BENCHMARKS)
def test_every_benchmark_loads(name: str) -> None:
    """`make bench` imports each in turn: one that does not load stops the run there."""
    module = importlib.import_module(f"bench.{name}")
    assert name == module.NAME
    assert module.TITLE
    assert callable(module.run)


@linux_only
def test_cpu_goes_to_the_part_its_thread_is_named_for() -> None:
    """A child whose threads named like the intake's writer and a dispatcher spin while its
    main thread waits: each is charged to its part, the unnamed main thread ("web") next to
    nothing."""
    script = textwrap.dedent(
        """
        import sys, threading, time
        from app.threads import start_thread

        done = threading.Event()

        def spin(seconds, spun):
            end = time.thread_time() + seconds
            while time.thread_time() < end:
                pass
            spun.set()
            done.wait()  # alive until measured: an ended thread is in no snapshot

        print("ready", flush=True)
        sys.stdin.readline()
        spun = [threading.Event(), threading.Event()]
        start_thread("respawn-intake-writer", spin, 0.4, spun[0])
        start_thread("respawn-dispatcher-0", spin, 0.2, spun[1])
        for event in spun:
            event.wait()
        print("spun", flush=True)
        sys.stdin.readline()
        done.set()
        """
    )
    with subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=PROJECT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as child:
        assert child.stdin is not None and child.stdout is not None
        try:
            assert child.stdout.readline() == "ready\n"
            assert child.pid in cpu._children(os.getpid())
            before = cpu.threads_of(child.pid)
            child.stdin.write("go\n")
            child.stdin.flush()
            assert child.stdout.readline() == "spun\n"
            spent = cpu.spent(before, cpu.threads_of(child.pid))
        finally:
            child.kill()  # whatever state it is in: a failure above stays the one reported
    assert spent["writer"] >= 0.3
    assert spent["other"] >= 0.1
    assert spent["processor"] == 0
    assert spent["web"] < 0.1
