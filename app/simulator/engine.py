"""What runs a play: the seam between the simulated service and what executes the play.

The service (app/simulator/state.py) owns statuses, timers, events and callbacks; an
`Engine` only runs one play against a list of hosts and reports Ansible-style events step by
step. `ScriptedEngine` (the default, and the one most tests use) follows host scripts;
`AnsibleEngine` (app/simulator/ansible_engine.py) runs the play with real `ansible-playbook`
and polls its process from `RunHandle.poll`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from app.simulator.scripts import OK, HostScript, run_random

PLAY_TASKS = ("Gathering Facts", "install packages", "deploy configuration", "restart service")
_CHANGED_TASKS = frozenset({"deploy configuration", "restart service"})
_DEFAULT_FAILED_TASK = {
    "fail": "restart service",
    "unreachable": "Gathering Facts",
    "async_failed": "deploy configuration",
}
_DEFAULT_STDERR = {
    "fail": "Job for app.service failed because the control process exited with error code.",
    "async_failed": "async task did not complete within the requested time",
}


@dataclass(frozen=True)
class EngineEvent:
    event_type: str
    message: dict[str, Any]


@dataclass(frozen=True)
class HostStats:
    ok: int = 0
    changed: int = 0
    unreachable: int = 0
    failures: int = 0
    skipped: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "ok": self.ok,
            "changed": self.changed,
            "unreachable": self.unreachable,
            "failures": self.failures,
            "skipped": self.skipped,
        }


@dataclass(frozen=True)
class RunOutcome:
    status: str  # SUCCESS | FAILURE | INIT_FAILURE
    failed_hosts: tuple[str, ...] = ()
    stats: Mapping[str, HostStats] = field(default_factory=dict)
    message: str | None = None  # why initialization failed


@dataclass(frozen=True)
class StepResult:
    events: tuple[EngineEvent, ...] = ()
    running: bool = False  # Ansible has started (the service moves to RUNNING)
    outcome: RunOutcome | None = None  # set when the run is over


@dataclass(frozen=True)
class RunContext:
    execution_id: str
    job_id: str
    account_alias: str
    run_number: int  # 1 for the first run, 2 after the first restart, ...
    hosts: tuple[str, ...]
    attempts: Mapping[str, int]  # earlier runs of each host in this execution
    scripts: Mapping[str, HostScript]
    playbook: str
    seed: int
    host_vars: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # the job's hostVars


class RunHandle(Protocol):
    def poll(self) -> StepResult:
        """Advance one step; called once per simulator tick while the run is active."""

    def cancel(self) -> None:
        """Stop the run (stop or kill); no further poll follows."""


class Engine(Protocol):
    def start_run(self, context: RunContext) -> RunHandle: ...


def planned_outcomes(context: RunContext) -> dict[str, str]:
    """Each host's outcome for this run, from its script (seeded: a seed repeats them)."""
    outcomes: dict[str, str] = {}
    for host in context.hosts:
        script = context.scripts.get(host, OK)
        attempt = context.attempts.get(host, 0)
        rng = run_random(context.seed, context.execution_id, host, attempt)
        outcomes[host] = script.outcome_for(attempt, rng)
    return outcomes


def init_failure_of(context: RunContext, outcomes: Mapping[str, str]) -> RunOutcome | None:
    """The INIT_FAILURE outcome when a host's script fails the run before Ansible starts."""
    broken = [h for h in context.hosts if outcomes[h] == "init_failure"]
    if not broken:
        return None
    host = broken[0]
    message = context.scripts.get(host, OK).message or (
        f"Failed to initialize the execution: inventory host {host!r} could not be resolved"
    )
    return RunOutcome("INIT_FAILURE", (), {}, message)


class ScriptedEngine:
    """Runs a fixed four-task play; each host's result comes from its script."""

    def start_run(self, context: RunContext) -> RunHandle:
        return ScriptedRun(context)


class ScriptedRun:
    def __init__(self, context: RunContext) -> None:
        self._context = context
        self._outcomes = planned_outcomes(context)
        self._step = 0
        self._failed: dict[str, str] = {}  # host -> outcome
        self._stats = {host: _Counter() for host in context.hosts}
        self._cancelled = False

    def cancel(self) -> None:
        self._cancelled = True

    def poll(self) -> StepResult:
        if self._cancelled:
            return StepResult()
        self._step += 1
        if self._step == 1:
            return self._initialize()
        task_index = self._step - 2
        if task_index < len(PLAY_TASKS):
            return StepResult(self._run_task(PLAY_TASKS[task_index]), running=True)
        return self._finish()

    def _script(self, host: str) -> HostScript:
        return self._context.scripts.get(host, OK)

    def _initialize(self) -> StepResult:
        init_failure = init_failure_of(self._context, self._outcomes)
        if init_failure is not None:
            return StepResult(outcome=init_failure)
        playbook = self._context.playbook
        return StepResult(
            (
                EngineEvent("playbook_on_start", {"playbook": playbook}),
                EngineEvent("playbook_on_play_start", {"name": "all", "pattern": "all"}),
            ),
            running=True,
        )

    def _failing_task(self, host: str) -> str:
        outcome = self._outcomes[host]
        script = self._script(host)
        task = script.task if script.task in PLAY_TASKS else None
        return task or _DEFAULT_FAILED_TASK.get(outcome, PLAY_TASKS[-1])

    def _run_task(self, task: str) -> tuple[EngineEvent, ...]:
        events = [EngineEvent("playbook_on_task_start", {"task": task, "is_conditional": False})]
        for host in self._context.hosts:
            counter = self._stats[host]
            if host in self._failed:
                continue
            outcome = self._outcomes[host]
            if outcome != "ok" and self._failing_task(host) == task:
                self._failed[host] = outcome
                events.append(self._failure(host, task, outcome))
                if outcome == "unreachable":
                    counter.unreachable += 1
                else:
                    counter.failures += 1
                continue
            changed = task in _CHANGED_TASKS
            counter.ok += 1
            counter.changed += int(changed)
            events.append(
                EngineEvent(
                    "runner_on_ok", {"host": host, "task": task, "changed": changed, "msg": ""}
                )
            )
        return tuple(events)

    def _failure(self, host: str, task: str, outcome: str) -> EngineEvent:
        script = self._script(host)
        if outcome == "unreachable":
            msg = script.message or (
                "Failed to connect to the host via ssh: ssh: connect to host "
                f"{host} port 22: Connection refused"
            )
            return EngineEvent(
                "runner_on_unreachable",
                {"host": host, "task": task, "msg": msg, "unreachable": True, "changed": False},
            )
        stderr = script.message or _DEFAULT_STDERR[outcome]
        if outcome == "async_failed":
            return EngineEvent(
                "runner_on_async_failed",
                {
                    "host": host,
                    "task": task,
                    "msg": "async task failed",
                    "stderr": stderr,
                    "rc": script.rc,
                    "changed": False,
                    "ansible_job_id": f"{self._context.run_number}.{host}",
                },
            )
        return EngineEvent(
            "runner_on_failed",
            {
                "host": host,
                "task": task,
                "msg": "non-zero return code",
                "stderr": stderr,
                "stdout": "",
                "rc": script.rc,
                "changed": True,
                "cmd": "systemctl restart app",
            },
        )

    def _finish(self) -> StepResult:
        stats = {host: counter.freeze() for host, counter in self._stats.items()}
        failed = tuple(h for h in self._context.hosts if h in self._failed)
        status = "FAILURE" if failed else "SUCCESS"
        events = (
            EngineEvent("playbook_on_stats", {"stats": {h: s.as_dict() for h, s in stats.items()}}),
        )
        return StepResult(events, outcome=RunOutcome(status, failed, stats))


class _Counter:
    def __init__(self) -> None:
        self.ok = self.changed = self.unreachable = self.failures = 0

    def freeze(self) -> HostStats:
        return HostStats(self.ok, self.changed, self.unreachable, self.failures, 0)
