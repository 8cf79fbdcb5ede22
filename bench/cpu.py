"""Where a served subject's CPU goes: its worker processes' threads, read from /proc (Linux).

respawn names its background threads for the operating system (`app/threads.py`), so each
thread's CPU time (utime + stime in `/proc/PID/task/TID/stat`) can be put to a part: the
intake's writer and processor, the rest of respawn's background, and "web" (gunicorn's
main loop and the request threads, unnamed, as are all of the baselines' threads).
Counted between two snapshots; a thread that ends between them is not counted (none does
under load).
"""

from __future__ import annotations

import os
from pathlib import Path

from app.threads import os_name

PARTS = ("web", "writer", "processor", "other")
_PART_OF = {
    os_name("respawn-intake-writer"): "writer",
    os_name("respawn-intake-processor"): "processor",
}
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

Snapshot = dict[tuple[int, int], tuple[str, float]]


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def snapshot(server_pid: int) -> Snapshot:
    """Every thread of the server's worker processes: its part and its CPU seconds so far."""
    found: Snapshot = {}
    for pid in _children(server_pid):
        found |= threads_of(pid)
    return found


def threads_of(pid: int) -> Snapshot:
    """The process's threads: their part and CPU seconds so far. A thread named like the
    process's main thread is unnamed: gunicorn's or a request's ("web")."""
    found: Snapshot = {}
    try:
        main = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return found  # the process ended meanwhile
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            comm = (task / "comm").read_text().strip()
            stat = (task / "stat").read_text()
        except OSError:
            continue  # the thread ended meanwhile
        fields = stat[stat.rindex(")") + 2 :].split()
        seconds = (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime
        part = "web" if comm == main else _PART_OF.get(comm, "other")
        found[(pid, int(task.name))] = (part, seconds)
    return found


def spent(before: Snapshot, after: Snapshot) -> dict[str, float]:
    """CPU seconds each part spent between two snapshots (threads born meanwhile counted
    from zero)."""
    parts = dict.fromkeys(PARTS, 0.0)
    for key, (part, seconds) in after.items():
        parts[part] += seconds - before.get(key, (part, 0.0))[1]
    return parts


def available() -> bool:
    """Whether this kernel lists threads and children in /proc (Linux with
    CONFIG_PROC_CHILDREN)."""
    return Path(f"/proc/self/task/{os.getpid()}/children").exists()
