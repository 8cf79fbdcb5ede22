"""respawn's background threads, named for the operating system too.

Python before 3.14 names a thread for itself only; `top -H`, `ps -L` and
`/proc/PID/task/*/comm` show every thread of a process as the process. Each thread started
here names itself on Linux (its Python name without `respawn-`, cut to the 15 bytes the
kernel keeps), so an operator sees which one spends the CPU (docs/operations.md), and the
ingest benchmark splits a worker's CPU the same way (docs/BENCHMARKS.md).
"""

from __future__ import annotations

import ctypes
import logging
import sys
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

OS_NAME_BYTES = 15
"""What Linux keeps of a thread's name (16 with the terminating NUL)."""
_PR_SET_NAME = 15


def os_name(name: str) -> str:
    """The name the operating system shows for a thread named `name`."""
    return name.removeprefix("respawn-").encode()[:OS_NAME_BYTES].decode(errors="ignore")


def _load_libc() -> Any:
    """The C library's functions, as loaded into this process (no `ldconfig` search)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None)
    except OSError:
        return None


_LIBC = _load_libc()


def name_this_thread(name: str) -> None:
    """Give the calling thread `os_name(name)` for the operating system (Linux only; a no-op
    elsewhere or if the kernel refuses)."""
    if _LIBC is None:
        return
    try:
        refused = _LIBC.prctl(_PR_SET_NAME, os_name(name).encode(), 0, 0, 0) != 0
    except (AttributeError, ctypes.ArgumentError):  # no prctl in this C library
        refused = True
    if refused:
        log.debug("could not name thread %s for the operating system", name)


def start_thread(name: str, target: Callable[..., object], *args: Any) -> threading.Thread:
    """Start a daemon thread running `target(*args)`, named `name` for Python and the
    operating system."""

    def run() -> None:
        name_this_thread(name)
        target(*args)

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    return thread
