"""respawn's background threads carry their names to the operating system (app/threads.py)."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest

from app.threads import OS_NAME_BYTES, os_name, start_thread

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc is Linux's")


def test_the_os_name_drops_the_prefix_and_keeps_what_the_kernel_keeps() -> None:
    assert os_name("respawn-intake-writer") == "intake-writer"
    assert os_name("respawn-intake-processor") == "intake-processo"
    assert os_name("respawn-gc") == "gc"
    assert os_name("other") == "other"
    assert len(os_name("respawn-" + "é" * 20).encode()) <= OS_NAME_BYTES  # cut on a character


@linux_only
def test_a_started_thread_is_named_for_python_and_the_kernel() -> None:
    seen: dict[str, str] = {}
    ready = threading.Event()
    release = threading.Event()

    def work(label: str) -> None:
        seen["label"] = label
        seen["python"] = threading.current_thread().name
        seen["kernel"] = Path(f"/proc/self/task/{threading.get_native_id()}/comm").read_text()
        ready.set()
        release.wait(5)

    thread = start_thread("respawn-intake-writer", work, "given")
    try:
        assert ready.wait(5)
        assert thread.daemon
        assert seen == {
            "label": "given",
            "python": "respawn-intake-writer",
            "kernel": "intake-writer\n",
        }
    finally:
        release.set()
        thread.join(5)
    # The caller's own thread keeps its name.
    assert (
        Path(f"/proc/self/task/{threading.get_native_id()}/comm").read_text() != "intake-writer\n"
    )
