"""One execution's runs, driven through the engine: begin, step, end, stop or kill, expire.

The service (state.py) decides *when* (queueing, ticks, the variant switches); the driver
does *what* a run's start and end mean for the execution: its status, its timer, its failed
hosts and the events it emits. Every method is called with the service's lock held.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from app.simulator.ansible_engine import AnsibleEngine
from app.simulator.engine import Engine, RunContext, RunHandle, RunOutcome, ScriptedEngine
from app.simulator.records import SimExecution
from app.simulator.scripts import HostScript
from app.simulator.shapes import now_ms, repository_log

log = logging.getLogger(__name__)

Emit = Callable[[SimExecution, str, dict[str, Any]], None]


def make_engine(engine: Engine | str) -> Engine:
    """An engine object, or one by name: "scripted" or "ansible"."""
    if not isinstance(engine, str):
        return engine
    if engine == "scripted":
        return ScriptedEngine()
    if engine == "ansible":
        return AnsibleEngine()
    raise ValueError(f"unknown engine {engine!r}; expected 'scripted' or 'ansible'")


class RunDriver:
    def __init__(self, engine: Engine, clock: Callable[[], float], seed: int, emit: Emit) -> None:
        self.engine = engine
        self._clock = clock
        self._seed = seed
        self._emit = emit

    def begin(
        self,
        ex: SimExecution,
        scripts: Mapping[str, HostScript],
        host_vars: Mapping[str, Mapping[str, Any]],
    ) -> None:
        """The run leaves PENDING: a new timer, failed hosts emptied, the engine started."""
        ex.run_number += 1
        ex.status = "INITIALIZING"
        ex.timers.append({"start": now_ms(self._clock), "end": None})
        ex.failed_hosts = []
        if ex.repository_log is None:
            ex.repository_log = repository_log(ex.definition, self._clock)
        hosts = ex.next_hosts
        context = RunContext(
            execution_id=ex.id,
            job_id=ex.job_id,
            account_alias=ex.account,
            run_number=ex.run_number,
            hosts=hosts,
            attempts={h: ex.attempts.get(h, 0) for h in hosts},
            scripts=scripts,
            playbook=str(
                (ex.definition.get("repository") or {}).get("defaultPlaybook") or "site.yml"
            ),
            seed=self._seed,
            host_vars=host_vars,
        )
        for host in hosts:
            ex.attempts[host] = ex.attempts.get(host, 0) + 1
        try:
            ex.handle = self.engine.start_run(context)
        except Exception as exc:  # an engine failure is the run's INIT_FAILURE
            log.exception("engine failed to start a run")
            self.end(ex, RunOutcome("INIT_FAILURE", message=f"engine error: {exc}"))

    def step(self, ex: SimExecution, handle: RunHandle) -> None:
        try:
            result = handle.poll()
        except Exception as exc:  # a broken engine fails this run, not the whole clock
            log.exception("engine failed during a run")
            _cancel_quietly(handle)
            status = "FAILURE" if ex.status == "RUNNING" else "INIT_FAILURE"
            self.end(ex, RunOutcome(status, message=f"engine error: {exc}"))
            return
        for event in result.events:
            self._emit(ex, event.event_type, dict(event.message))
        if result.outcome is not None:
            self.end(ex, result.outcome)
        elif result.running and ex.status == "INITIALIZING":
            ex.status = "RUNNING"

    def end(self, ex: SimExecution, outcome: RunOutcome) -> None:
        ex.handle = None
        ex.status = outcome.status
        ex.failed_hosts = list(outcome.failed_hosts)
        self._close_timer(ex)
        message: dict[str, Any] = {
            "status": outcome.status,
            "stats": {host: stats.as_dict() for host, stats in outcome.stats.items()},
        }
        if outcome.message:
            message["msg"] = outcome.message
        self._emit(ex, "playbook_result", message)

    def cancel(self, ex: SimExecution) -> None:
        """STOPPING → STOPPED, KILLING → KILLED; a started run ends with its result event."""
        final = "KILLED" if ex.status == "KILLING" else "STOPPED"
        handle, ex.handle = ex.handle, None
        ex.status = final
        if handle is not None:
            handle.cancel()
            self._close_timer(ex)
            self._emit(ex, "playbook_result", {"status": final, "stats": {}})

    def overdue(self, ex: SimExecution, ttl_minutes: int) -> bool:
        """The run has gone on for longer than `ttl_minutes` of the simulator's clock."""
        if ex.handle is None or not ex.timers or ex.timers[-1]["start"] is None:
            return False
        started = ex.timers[-1]["start"] or 0
        return now_ms(self._clock) - started > ttl_minutes * 60_000

    def expire(self, ex: SimExecution, ttl_minutes: int) -> None:
        """The run took longer than the job's executionTtl: it is cut short and ends EXPIRED.

        Its result event says EXPIRED (never FAILURE), with no stats, and its failed hosts
        are empty: no host failed, the run was stopped (docs/simulator.md)."""
        handle, ex.handle = ex.handle, None
        if handle is not None:
            handle.cancel()
        ex.status = "EXPIRED"
        ex.failed_hosts = []
        self._close_timer(ex)
        self._emit(
            ex,
            "playbook_result",
            {
                "status": "EXPIRED",
                "stats": {},
                "msg": f"The execution ran longer than its executionTtl of {ttl_minutes} minutes.",
            },
        )

    def abandon(self, ex: SimExecution) -> None:
        """Stop the engine's work without a word (the simulator closes or is reset)."""
        handle, ex.handle = ex.handle, None
        if handle is not None:
            _cancel_quietly(handle)

    def _close_timer(self, ex: SimExecution) -> None:
        if ex.timers and ex.timers[-1]["end"] is None:
            start = ex.timers[-1]["start"] or 0
            ex.timers[-1]["end"] = max(now_ms(self._clock), start)


def _cancel_quietly(handle: RunHandle) -> None:
    try:
        handle.cancel()
    except Exception:  # the other runs (and closing) must go on; it is logged
        log.exception("engine failed to cancel a run")
