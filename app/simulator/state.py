"""The simulated Runner service: accounts, jobs, executions, runs, events; thread-safe.

Every public method takes the one lock, so the HTTP handlers and the clock thread see a
consistent service. Time moves in ticks: each tick advances every active execution by one
step (PENDING → INITIALIZING → RUNNING → one task per tick → SUCCESS | FAILURE), driven by
the clock thread at `speed` ticks per second, or by `advance()` when the clock is stopped.
"""

from __future__ import annotations

import fnmatch
import logging
import random
import secrets
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from app.simulator.callbacks import CallbackSender, parse_callbacks
from app.simulator.config import Faults, SettingsError, SimulatorConfig, SimUser
from app.simulator.engine import Engine, RunContext, RunHandle, RunOutcome, ScriptedEngine
from app.simulator.faults import FaultInjector
from app.simulator.records import CallStats, SimExecution, SimJob
from app.simulator.scripts import OK, HostScript, parse_script
from app.simulator.shapes import (
    FAILED,
    FINAL,
    LOGIN_ERROR,
    MAX_PAGE_SIZE,
    STOPPABLE,
    SimError,
    fleet_job,
    invalid,
    now_ms,
    page_of,
    repository_log,
    run_hosts,
    validate_job,
)
from app.simulator.tokens import TokenClaims, TokenIssuer

log = logging.getLogger(__name__)


class Simulator:
    """The simulated service. Use from HTTP (views.py) or directly from Python."""

    def __init__(
        self,
        config: SimulatorConfig | None = None,
        engine: Engine | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config or SimulatorConfig()
        self.seed = self.config.seed if self.config.seed is not None else secrets.randbits(32)
        self._clock = clock
        self._engine: Engine = engine or ScriptedEngine()
        self._lock = threading.RLock()
        self._users = {u.username: u for u in self.config.users}
        self._initial_faults = Faults().updated(self.config.faults)
        self.faults = FaultInjector(
            self._initial_faults,
            random.Random(self.seed + 1),  # noqa: S311 - simulation, not security
            self.config.hold_timeout,
        )
        self.tokens = TokenIssuer(clock)
        self.callbacks = CallbackSender(
            lambda: self.faults.faults,
            random.Random(self.seed + 2),  # noqa: S311 - simulation, not security
            (self.config.callback_connect_timeout, self.config.callback_read_timeout),
            self.config.allow_remote_callbacks,
        )
        self.calls = CallStats()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # Ids come from the seed, so a scripted scenario is reproducible; a reset continues
        # the sequence so ids from before it are never reused.
        self._ids = random.Random(self.seed)  # noqa: S311 - reproducible ids, not secrets
        self._reset_state()

    def _reset_state(self) -> None:
        self._jobs: dict[str, SimJob] = {}
        self._executions: dict[str, SimExecution] = {}
        self._seq = 0
        self._ticks = 0
        self._speed = self.config.speed
        self._token_ttl = self.config.token_ttl
        self._max_running = self.config.max_running_per_account
        self._scripts = [(glob, parse_script(s)) for glob, s in self.config.host_scripts]

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        """Start the clock thread (idempotent). The callback thread starts on first use."""
        with self._lock:
            if self._thread is not None or self._stop.is_set():
                return
            self._thread = threading.Thread(target=self._run_clock, name="sim-clock", daemon=True)
            self._thread.start()

    def close(self) -> None:
        """Stop the clock, release held and hanging calls, stop sending callbacks."""
        self._stop.set()
        self.faults.close()
        thread = self._thread
        if thread is not None:
            thread.join(timeout=5)
        self.callbacks.close()

    def _run_clock(self) -> None:
        while not self._stop.is_set():
            speed = self._speed
            if speed <= 0:
                self._stop.wait(0.05)
                continue
            if self._stop.wait(1.0 / speed):
                return
            try:
                self.tick()
            except Exception:  # the clock must survive a bad step; it is logged
                log.exception("simulator tick failed")

    def reset(self) -> None:
        """Forget jobs, executions, events, counters; faults, scripts, speed as configured.

        Tokens stay valid (revoke them with `expire_tokens`)."""
        self.faults.reset(self._initial_faults)
        with self._lock:
            self._reset_state()
            self.calls.clear()
        self.callbacks.clear()

    def now_ms(self) -> int:
        return now_ms(self._clock)

    # -- settings ------------------------------------------------------------------------

    def settings(self) -> dict[str, Any]:
        with self._lock:
            return {
                "speed": self._speed,
                "token_ttl": self._token_ttl,
                "max_running_per_account": self._max_running,
                "seed": self.seed,
                "ticks": self._ticks,
            }

    def update_settings(self, changes: Mapping[str, Any]) -> dict[str, Any]:
        unknown = set(changes) - {"speed", "token_ttl", "max_running_per_account"}
        if unknown:
            raise SettingsError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        values = {}
        for name, value in changes.items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise SettingsError(f"{name} must be a number")
            values[name] = value
        if values.get("speed", 0) < 0 or values.get("token_ttl", 1) <= 0:
            raise SettingsError("speed must be >= 0 and token_ttl > 0")
        if values.get("max_running_per_account", 1) < 1:
            raise SettingsError("max_running_per_account must be >= 1")
        with self._lock:
            if "speed" in values:
                self._speed = float(values["speed"])
            if "token_ttl" in values:
                self._token_ttl = float(values["token_ttl"])
            if "max_running_per_account" in values:
                self._max_running = int(values["max_running_per_account"])
        return self.settings()

    def set_speed(self, speed: float) -> None:
        self.update_settings({"speed": speed})

    def scripts(self) -> list[dict[str, Any]]:
        with self._lock:
            return [{"hosts": glob, "script": s.as_dict()} for glob, s in self._scripts]

    def set_scripts(self, rules: Mapping[str, Any], replace: bool = False) -> list[dict[str, Any]]:
        """Host glob → script rules, used for hosts without `hostVars.sim_script`."""
        parsed = [(str(glob), parse_script(script)) for glob, script in rules.items()]
        with self._lock:
            if replace:
                self._scripts = []
            kept = [(g, s) for g, s in self._scripts if g not in dict(parsed)]
            self._scripts = kept + parsed
        return self.scripts()

    def expire_tokens(self) -> int:
        """Revoke every token issued so far (early expiry); returns how many."""
        return self.tokens.revoke_all()

    # -- auth ----------------------------------------------------------------------------

    def login(self, body: Any) -> dict[str, Any]:
        user: SimUser | None = None
        if isinstance(body, Mapping):
            candidate = self._users.get(str(body.get("username", "")))
            password = body.get("password")
            if (
                candidate is not None
                and isinstance(password, str)
                and secrets.compare_digest(password.encode(), candidate.password.encode())
            ):
                user = candidate
        if user is None:
            raise SimError(400, LOGIN_ERROR)
        with self._lock:
            ttl = self._token_ttl
        return {
            "userName": user.username,
            "accountAlias": user.account_alias,
            "locationAlias": user.location_alias,
            "roles": list(user.roles),
            "bearerToken": self.tokens.issue(user, ttl),
        }

    def authenticate(self, authorization: str | None) -> TokenClaims:
        scheme, _, token = (authorization or "").partition(" ")
        claims = self.tokens.check(token.strip()) if scheme.lower() == "bearer" else None
        if claims is None:
            raise SimError(401, "Authorization has been denied for this request.")
        return claims

    @staticmethod
    def check_account(claims: TokenClaims, account: str) -> None:
        if claims.account_alias.upper() != account.upper():
            raise SimError(403, f"You do not have access to account {account}.")

    # -- jobs ----------------------------------------------------------------------------

    def _new_id(self) -> str:
        return str(uuid.UUID(int=self._ids.getrandbits(128), version=4))

    def _job(self, account: str, job_id: str) -> SimJob:
        job = self._jobs.get(job_id)
        if job is None or job.account.upper() != account.upper():
            raise SimError(404, f"Job {job_id} was not found.")
        return job

    def create_job(self, account: str, body: Any, immediate: bool = False) -> dict[str, Any]:
        definition = validate_job(body)
        with self._lock:
            ms = now_ms(self._clock)
            job = SimJob(self._new_id(), account.upper(), definition, ms, ms)
            self._jobs[job.id] = job
            if immediate:
                self._queue_new(job, job.host_ids)
            return job.answer()

    def update_job(self, account: str, job_id: str, body: Any) -> dict[str, Any]:
        definition = validate_job(body)
        with self._lock:
            job = self._job(account, job_id)
            job.definition = definition
            job.updated_ms = max(now_ms(self._clock), job.updated_ms)
            return job.answer()

    def get_job(self, account: str, job_id: str) -> dict[str, Any]:
        with self._lock:
            return self._job(account, job_id).answer()

    def delete_job(self, account: str, job_id: str) -> None:
        with self._lock:
            del self._jobs[self._job(account, job_id).id]

    def list_jobs(self, account: str, page: int, size: int) -> dict[str, Any]:
        with self._lock:
            jobs = [j for j in self._jobs.values() if j.account == account.upper()]
            jobs.sort(key=lambda j: (j.created_ms, j.id), reverse=True)
            return page_of([j.answer() for j in jobs], page, size)

    # -- executions ----------------------------------------------------------------------

    def _execution(self, account: str, job_id: str | None, execution_id: str) -> SimExecution:
        ex = self._executions.get(execution_id)
        if (
            ex is None
            or ex.account != account.upper()
            or (job_id is not None and ex.job_id != job_id)
        ):
            raise SimError(404, f"Execution {execution_id} was not found.")
        return ex

    def _queue_new(self, job: SimJob, hosts: tuple[str, ...]) -> SimExecution:
        self._seq += 1
        ex = SimExecution(
            id=self._new_id(),
            record_id=self._new_id(),
            job_id=job.id,
            account=job.account,
            created_seq=self._seq,
            queued_seq=self._seq,
            definition=job.definition,
            original_hosts=hosts,
            next_hosts=hosts,
        )
        self._executions[ex.id] = ex
        return ex

    def start_job(self, account: str, job_id: str, body: Any) -> dict[str, Any]:
        with self._lock:
            job = self._job(account, job_id)
            hosts = run_hosts(body, job.host_ids) or job.host_ids
            return self._queue_new(job, hosts).document(self.config.execution_shape)

    def get_execution(self, account: str, job_id: str | None, execution_id: str) -> dict[str, Any]:
        with self._lock:
            return self._execution(account, job_id, execution_id).document(
                self.config.execution_shape
            )

    def list_executions(
        self, account: str, job_id: str | None, page: int, size: int
    ) -> dict[str, Any]:
        with self._lock:
            if job_id is not None:
                self._job(account, job_id)
            found = [
                ex
                for ex in self._executions.values()
                if ex.account == account.upper() and (job_id is None or ex.job_id == job_id)
            ]
            found.sort(key=lambda ex: ex.created_seq, reverse=True)
            shape = self.config.execution_shape
            return page_of([ex.document(shape) for ex in found], page, size)

    def restart(self, account: str, job_id: str, execution_id: str, body: Any) -> dict[str, Any]:
        """Queue a failed execution again; only the given hosts, or its original ones."""
        with self._lock:
            ex = self._execution(account, job_id, execution_id)
            job = self._job(account, job_id)
            if ex.status not in FAILED:
                raise SimError(
                    400,
                    f"Execution {execution_id} is {ex.status}; only a failed execution "
                    "can be restarted.",
                )
            hosts = run_hosts(body, job.host_ids) or ex.original_hosts
            self._seq += 1
            ex.queued_seq = self._seq
            ex.definition = job.definition
            ex.next_hosts = hosts
            ex.status = "PENDING"
            ex.restarts += 1
            return ex.document(self.config.execution_shape)

    def stop(self, account: str, job_id: str, execution_id: str, kill: bool) -> dict[str, Any]:
        with self._lock:
            ex = self._execution(account, job_id, execution_id)
            if ex.status not in STOPPABLE and not (kill and ex.status == "KILLING"):
                raise SimError(400, f"Execution {execution_id} is {ex.status}; it is not running.")
            ex.status = "KILLING" if kill else "STOPPING"
            return ex.document(self.config.execution_shape)

    def status_events(
        self, account: str, job_id: str, execution_id: str, page: int | None, size: int | None
    ) -> list[dict[str, Any]] | dict[str, Any]:
        """The execution's events, oldest first: a bare array, or a page when asked for one."""
        with self._lock:
            events = list(self._execution(account, job_id, execution_id).events)
        if page is None and size is None:
            return events
        return page_of(events, page or 0, size or MAX_PAGE_SIZE)

    # -- the clock -----------------------------------------------------------------------

    def tick(self) -> int:
        """Advance every active execution one step; returns how many are still active."""
        with self._lock:
            self._ticks += 1
            running = Counter(ex.account for ex in self._executions.values() if ex.handle)
            active = sorted(
                (ex for ex in self._executions.values() if ex.status not in FINAL),
                key=lambda ex: ex.queued_seq,
            )
            for ex in active:
                if ex.status == "PENDING":
                    if running[ex.account] < self._max_running:
                        running[ex.account] += 1
                        self._begin_run(ex)
                elif ex.status in ("STOPPING", "KILLING"):
                    self._cancel_run(ex)
                elif ex.handle is not None:
                    self._step_run(ex, ex.handle)
            return sum(1 for ex in self._executions.values() if ex.status not in FINAL)

    def advance(self, ticks: int = 1) -> int:
        active = 0
        for _ in range(ticks):
            active = self.tick()
        return active

    def advance_until_idle(self, max_ticks: int = 10_000) -> int:
        """Tick until no execution is active; returns the ticks taken."""
        for done in range(1, max_ticks + 1):
            if self.tick() == 0:
                return done
        raise RuntimeError(f"still active after {max_ticks} ticks")

    def _begin_run(self, ex: SimExecution) -> None:
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
            scripts={h: self._script_for(ex.definition, h) for h in hosts},
            playbook=str(
                (ex.definition.get("repository") or {}).get("defaultPlaybook") or "site.yml"
            ),
            seed=self.seed,
        )
        for host in hosts:
            ex.attempts[host] = ex.attempts.get(host, 0) + 1
        try:
            ex.handle = self._engine.start_run(context)
        except Exception as exc:  # an engine failure is the run's INIT_FAILURE
            log.exception("engine failed to start a run")
            self._end_run(ex, RunOutcome("INIT_FAILURE", message=f"engine error: {exc}"))

    def _step_run(self, ex: SimExecution, handle: RunHandle) -> None:
        try:
            result = handle.poll()
        except Exception as exc:  # a broken engine fails this run, not the whole clock
            log.exception("engine failed during a run")
            status = "FAILURE" if ex.status == "RUNNING" else "INIT_FAILURE"
            self._end_run(ex, RunOutcome(status, message=f"engine error: {exc}"))
            return
        for event in result.events:
            self._emit(ex, event.event_type, dict(event.message))
        if result.outcome is not None:
            self._end_run(ex, result.outcome)
        elif result.running and ex.status == "INITIALIZING":
            ex.status = "RUNNING"

    def _end_run(self, ex: SimExecution, outcome: RunOutcome) -> None:
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

    def _cancel_run(self, ex: SimExecution) -> None:
        final = "KILLED" if ex.status == "KILLING" else "STOPPED"
        handle, ex.handle = ex.handle, None
        ex.status = final
        if handle is not None:
            handle.cancel()
            self._close_timer(ex)
            self._emit(ex, "playbook_result", {"status": final, "stats": {}})

    def _close_timer(self, ex: SimExecution) -> None:
        if ex.timers and ex.timers[-1]["end"] is None:
            start = ex.timers[-1]["start"] or 0
            ex.timers[-1]["end"] = max(now_ms(self._clock), start)

    def _emit(self, ex: SimExecution, event_type: str, message: dict[str, Any]) -> None:
        event = {
            "id": self._new_id(),
            "timestamp": now_ms(self._clock),
            "account_alias": ex.account,
            "job_id": ex.job_id,
            "execution_id": ex.id,
            "event_type": event_type,
            "message": message,
            "notifications": [],
        }
        ex.events.append(event)
        job = self._jobs.get(ex.job_id)
        definition = job.definition if job is not None else ex.definition
        self.callbacks.submit(event, parse_callbacks(definition.get("callbacks")))

    def _script_for(self, definition: Mapping[str, Any], host: str) -> HostScript:
        for entry in definition.get("hosts") or ():
            if entry.get("id") == host:
                script = (entry.get("hostVars") or {}).get("sim_script")
                if script is not None:
                    return parse_script(script)
        for glob, script in self._scripts:
            if fnmatch.fnmatchcase(host, glob):
                return script
        return OK

    # -- for tests and demos -------------------------------------------------------------

    def executions(self) -> list[dict[str, Any]]:
        """Every execution of every account, oldest first, with its run count and hosts."""
        with self._lock:
            return [
                {
                    **ex.document(),
                    "runs": ex.run_number,
                    "restarts": ex.restarts,
                    "hosts": list(ex.next_hosts),
                }
                for ex in sorted(self._executions.values(), key=lambda e: e.created_seq)
            ]

    def execution(self, execution_id: str) -> dict[str, Any]:
        with self._lock:
            ex = self._executions.get(execution_id)
            if ex is None:
                raise KeyError(execution_id)
            return {**ex.document(), "runs": ex.run_number, "restarts": ex.restarts}

    def wait_status(
        self, execution_id: str, statuses: Iterable[str], timeout: float = 5.0
    ) -> dict[str, Any]:
        """Poll until the execution has one of `statuses` (the clock must be running)."""
        wanted = {s.upper() for s in statuses}
        deadline = time.monotonic() + timeout
        while True:
            doc = self.execution(execution_id)
            if doc["status"] in wanted:
                return doc
            if time.monotonic() > deadline:
                raise TimeoutError(f"{execution_id} is {doc['status']}, not {sorted(wanted)}")
            time.sleep(0.005)

    def create_fleet(self, spec: Mapping[str, Any]) -> dict[str, Any]:
        """Jobs with scripted hosts, started at once: see docs/simulator.md (`/_sim/fleet`)."""
        account = str(spec.get("account") or self.config.users[0].account_alias)
        jobs = spec.get("jobs")
        if not isinstance(jobs, list) or not jobs:
            raise invalid({"jobs": ["a non-empty list of jobs is required"]})
        default_callbacks = spec.get("callbacks", [])
        created = []
        for index, item in enumerate(jobs):
            if not isinstance(item, Mapping):
                raise invalid({f"jobs[{index}]": ["a job must be an object"]})
            definition = fleet_job(
                str(item.get("description") or f"simulated job {index + 1}"),
                item.get("hosts") or {},
                item.get("callbacks", default_callbacks),
            )
            answer = self.create_job(account, definition)
            runs = item.get("executions", 1 if item.get("start", True) else 0)
            if isinstance(runs, bool) or not isinstance(runs, int) or not 0 <= runs <= 100:
                raise invalid({f"jobs[{index}].executions": ["a whole number in 0..100"]})
            started = [self.start_job(account, answer["id"], {}) for _ in range(runs)]
            created.append(
                {
                    "id": answer["id"],
                    "description": answer["description"],
                    "hosts": [h["id"] for h in answer["hosts"]],
                    "executions": [doc["execution_id"] for doc in started],
                }
            )
        return {"account": account, "jobs": created}
