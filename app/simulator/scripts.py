"""Host scripts: how each simulated host behaves, run after run, reproducibly.

A script is given per job host as `hostVars.sim_script`, or by host glob (`--script`,
`POST /_sim/scripts`). Accepted forms (docs/simulator.md):

- a word: `ok`, `fail`, `unreachable`, `async_failed`, `init_failure`;
- `word:number` or an object with one shorthand: `fail_first: N`, `unreachable_first: N`,
  `async_failed_first: N`, `init_failure_first: N` (the outcome for the host's first N runs
  of an execution, then ok), `flaky: p` (fails each run with probability p);
- an object in full: `{"outcome", "first", "probability", "message", "rc", "task"}`;
  `fail_message: "..."` sets the failure text (stderr) and implies `fail`.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

OUTCOMES = ("ok", "fail", "unreachable", "async_failed", "init_failure")
_FAILING = OUTCOMES[1:]
MAX_MESSAGE = 4000


class ScriptError(ValueError):
    """A host script that cannot be understood; the message says why."""


@dataclass(frozen=True)
class HostScript:
    outcome: str = "ok"
    first: int | None = None  # the outcome applies to the host's first N runs, then ok
    probability: float | None = None  # the outcome applies to each run with this chance
    message: str | None = None  # stderr of a failed task, or msg of an unreachable host
    rc: int = 1
    task: str | None = None  # the task that fails (defaults depend on the outcome)

    def outcome_for(self, attempt: int, rng: random.Random) -> str:
        """The outcome of the host's run number `attempt` (0 = first run of the execution)."""
        if self.outcome == "ok":
            return "ok"
        if self.first is not None and attempt >= self.first:
            return "ok"
        if self.probability is not None and rng.random() >= self.probability:
            return "ok"
        return self.outcome

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


OK = HostScript()


def _number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ScriptError(f"{name} must be a number")
    return float(value)


def _whole(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ScriptError(f"{name} must be a whole number >= 0")
    return value


def parse_script(value: Any) -> HostScript:
    """A HostScript from any accepted form (see the module docstring)."""
    if isinstance(value, HostScript):
        return value
    if isinstance(value, str):
        return _parse_text(value.strip())
    if isinstance(value, Mapping):
        return _parse_mapping(value)
    raise ScriptError("a host script is a word, 'word:number' or an object")


def _parse_text(text: str) -> HostScript:
    if text.startswith("{"):
        try:
            return _parse_mapping(json.loads(text))
        except (ValueError, AttributeError) as exc:
            raise ScriptError(f"bad JSON host script: {exc}") from None
    if ":" in text:
        key, _, raw = text.partition(":")
        try:
            number: float = int(raw) if raw.strip().lstrip("-").isdigit() else float(raw)
        except ValueError:
            raise ScriptError(f"{key.strip()}: {raw.strip()!r} is not a number") from None
        return _parse_mapping({key.strip(): number})
    if text in OUTCOMES:
        return HostScript(outcome=text)
    raise ScriptError(f"unknown host script {text!r}; expected one of {', '.join(OUTCOMES)}")


def _parse_mapping(data: Any) -> HostScript:
    if not isinstance(data, Mapping):
        raise ScriptError("a host script object must be a JSON object")
    data = dict(data)
    outcome: str | None = None
    first: int | None = None
    probability: float | None = None

    def set_outcome(value: str) -> None:
        nonlocal outcome
        if outcome is not None and outcome != value:
            raise ScriptError(f"conflicting outcomes {outcome!r} and {value!r}")
        outcome = value

    if "outcome" in data:
        raw = data.pop("outcome")
        if raw not in OUTCOMES:
            raise ScriptError(f"outcome must be one of {', '.join(OUTCOMES)}")
        set_outcome(raw)
    for name in _FAILING:
        key = f"{name}_first"
        if key in data:
            set_outcome(name)
            first = _whole(data.pop(key), key)
    if "first" in data:
        first = _whole(data.pop("first"), "first")
    for key in ("flaky", "probability"):
        if key in data:
            probability = _number(data.pop(key), key)
            if not 0 <= probability <= 1:
                raise ScriptError(f"{key} must be between 0 and 1")
    message = None
    for key in ("fail_message", "message", "stderr"):
        if key in data:
            if key == "fail_message" and outcome is None:
                set_outcome("fail")
            raw_message = data.pop(key)
            if not isinstance(raw_message, str) or len(raw_message) > MAX_MESSAGE:
                raise ScriptError(f"{key} must be a string of at most {MAX_MESSAGE} characters")
            message = raw_message
    rc = 1
    if "rc" in data:
        rc = _whole(data.pop("rc"), "rc")
        if not 1 <= rc <= 255:
            raise ScriptError("rc must be in 1..255")
    task = None
    if "task" in data:
        task = data.pop("task")
        if not isinstance(task, str) or not task.strip():
            raise ScriptError("task must be a task name")
    if data:
        raise ScriptError(f"unknown host script key(s): {', '.join(sorted(map(str, data)))}")
    if outcome is None:
        outcome = "fail" if (probability is not None or first is not None) else "ok"
    return HostScript(outcome, first, probability, message, rc, task)


def run_random(seed: int, execution_id: str, host: str, attempt: int) -> random.Random:
    """The generator for one host's run: the same seed gives the same outcomes."""
    return random.Random(f"{seed}:{execution_id}:{host}:{attempt}")  # noqa: S311 - simulation
