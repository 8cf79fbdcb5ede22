"""Ansible stdout callback of respawn's Runner simulator: Ansible's own callback events as
Runner status events.

Each event is one JSON line `{"event_type", "message"}` appended to the file named by the
RESPAWN_SIM_EVENTS environment variable (standard output when it is unset). `event_type` is
the hook's name without `v2_` (`playbook_on_start`, `runner_on_failed`, ...); a runner
event's `message` is Ansible's result dict with the host and the task added. The simulator's
Ansible engine (app/simulator/ansible_engine.py) reads the file and stamps the events.

ansible-playbook loads this file (ANSIBLE_STDOUT_CALLBACK=respawn_runner); no app code imports
it, and it imports nothing of respawn: it runs inside Ansible's process.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from typing import Any, TextIO

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
name: respawn_runner
type: stdout
short_description: Runner status events for respawn's simulator, as JSON lines
description:
  - Writes every playbook and runner event as one JSON line to the file named by the
    RESPAWN_SIM_EVENTS environment variable.
"""

EVENTS_ENV = "RESPAWN_SIM_EVENTS"
TEXT_TAIL = 4000  # characters kept of stdout/stderr/msg: a failure's text is at its end
_TEXT_KEYS = ("msg", "stdout", "stderr", "module_stdout", "module_stderr")
# Noise for a status feed: the module's arguments (they may hold secrets), line-split copies
# of stdout/stderr, and Ansible's "(traceback unavailable)" placeholder.
_DROPPED = frozenset({"invocation", "stdout_lines", "stderr_lines", "exception"})
_STATS = ("ok", "changed", "unreachable", "failures", "skipped")


def _part(result: Any, name: str) -> Any:
    """`result.host` / `.task` / `.result` (ansible-core 2.19), or the older `_host`, ..."""
    value = getattr(result, name, None)
    return value if value is not None else getattr(result, f"_{name}", None)


def _clean(data: Mapping[str, Any]) -> dict[str, Any]:
    cleaned: dict[str, Any] = {}
    for key, value in data.items():
        if key.startswith("_ansible") or key in _DROPPED:
            continue
        if key in _TEXT_KEYS and isinstance(value, str) and len(value) > TEXT_TAIL:
            value = value[-TEXT_TAIL:]
        cleaned[key] = value
    return cleaned


# CallbackBase comes untyped from ansible-core (no py.typed), hence the ignore.
class CallbackModule(CallbackBase):  # type: ignore[misc]
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "stdout"
    CALLBACK_NAME = "respawn_runner"

    def __init__(self) -> None:
        super().__init__()
        path = os.environ.get(EVENTS_ENV)
        # Open for the whole play (closed when Ansible's process ends): events go out one by
        # one, flushed, so the engine sees each as it happens.
        self._out: TextIO = (
            open(path, "a", encoding="utf-8")  # noqa: SIM115
            if path
            else sys.stdout
        )

    def _emit(self, event_type: str, message: Mapping[str, Any]) -> None:
        record = {"event_type": event_type, "message": dict(message)}
        self._out.write(json.dumps(record, default=str, ensure_ascii=False) + "\n")
        self._out.flush()

    def _runner(self, event_type: str, result: Any) -> None:
        data = _part(result, "result")
        message = {
            "host": _part(result, "host").get_name(),
            "task": _part(result, "task").get_name(),
            **_clean(data if isinstance(data, Mapping) else {}),
        }
        self._emit(event_type, message)

    def v2_playbook_on_start(self, playbook: Any) -> None:
        name = os.path.basename(str(getattr(playbook, "_file_name", "") or "site.yml"))
        self._emit("playbook_on_start", {"playbook": name})

    def v2_playbook_on_play_start(self, play: Any) -> None:
        hosts = getattr(play, "hosts", None)
        pattern = ",".join(hosts) if isinstance(hosts, list) else str(hosts or "all")
        self._emit("playbook_on_play_start", {"name": play.get_name(), "pattern": pattern})

    def v2_playbook_on_task_start(self, task: Any, is_conditional: Any) -> None:
        message = {"task": task.get_name(), "is_conditional": bool(is_conditional)}
        self._emit("playbook_on_task_start", message)

    def v2_runner_on_ok(self, result: Any) -> None:
        self._runner("runner_on_ok", result)

    def v2_runner_on_failed(self, result: Any, ignore_errors: bool = False) -> None:
        self._runner("runner_on_failed", result)

    def v2_runner_on_unreachable(self, result: Any) -> None:
        self._runner("runner_on_unreachable", result)

    def v2_runner_on_skipped(self, result: Any) -> None:
        self._runner("runner_on_skipped", result)

    def v2_runner_on_async_ok(self, result: Any) -> None:
        self._runner("runner_on_async_ok", result)

    def v2_runner_on_async_failed(self, result: Any) -> None:
        self._runner("runner_on_async_failed", result)

    def v2_playbook_on_stats(self, stats: Any) -> None:
        summary = {}
        for host in sorted(stats.processed):
            counts = stats.summarize(host)
            summary[host] = {key: int(counts.get(key, 0)) for key in _STATS}
        self._emit("playbook_on_stats", {"stats": summary})
