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
from app.simulator.config import Faults, SettingsError, SimulatorConfig, SimUser, Variants
from app.simulator.engine import Engine
from app.simulator.faults import FaultInjector
from app.simulator.records import CallStats, SimExecution, SimJob, execution_ttl
from app.simulator.runs import RunDriver, make_engine
from app.simulator.scripts import OK, HostScript, parse_script
from app.simulator.shapes import (
    FAILED,
    FINAL,
    LOGIN_ERROR,
    NO_RESOURCE,
    STOPPABLE,
    SimError,
    fleet_job,
    invalid,
    now_ms,
    page_of,
    run_hosts,
    status_answer,
    validate_job,
)
from app.simulator.tokens import TokenClaims, TokenIssuer

log = logging.getLogger(__name__)


class Simulator:
    """The simulated service. Use from HTTP (views.py) or directly from Python."""

    def __init__(
        self,
        config: SimulatorConfig | None = None,
        engine: Engine | str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config or SimulatorConfig()
        self.seed = self.config.seed if self.config.seed is not None else secrets.randbits(32)
        self._clock = clock
        self._runs = RunDriver(
            make_engine(engine or self.config.engine), clock, self.seed, self._emit
        )
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
        # Every event of a job, in the order emitted (the job-wide status API).
        self._job_events: dict[str, list[dict[str, Any]]] = {}
        self._variants = self.config.variants()
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

    @property
    def engine(self) -> Engine:
        return self._runs.engine

    def close(self) -> None:
        """Stop the clock and the engine's runs, release held and hanging calls, stop
        sending callbacks."""
        self._stop.set()
        self.faults.close()
        thread = self._thread
        if thread is not None:
            thread.join(timeout=5)
        self._abandon_runs()
        self.callbacks.close()

    def _abandon_runs(self) -> None:
        with self._lock:
            for ex in self._executions.values():
                self._runs.abandon(ex)

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
        with self._lock:  # no tick may start a run between the two
            self._abandon_runs()
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

    @property
    def variants(self) -> Variants:
        with self._lock:
            return self._variants

    def set_variants(self, changes: Mapping[str, Any]) -> Variants:
        """Change some variant switches (docs/simulator.md); the others stay."""
        with self._lock:
            self._variants = self._variants.updated(changes)
            return self._variants

    def clear_variants(self) -> Variants:
        """Every variant switch off (not back to the configured ones: see `reset`)."""
        with self._lock:
            self._variants = Variants()
            return self._variants

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
        """Queue a new execution: on the hosts given (any hosts, as the Start doc allows),
        or on the job's own. The answer carries top-level `start`/`end` (null), as the
        published start example shows, besides the `timers` every other answer has."""
        with self._lock:
            job = self._job(account, job_id)
            hosts = run_hosts(body, job.host_ids, any_host=True) or job.host_ids
            document = self._queue_new(job, hosts).document(self.config.execution_shape)
            return {**document, "start": None, "end": None}

    def get_execution(self, account: str, job_id: str | None, execution_id: str) -> dict[str, Any]:
        with self._lock:
            if self._variants.execution_get_404:
                raise SimError(404, NO_RESOURCE)
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
            found.sort(key=lambda ex: ex.created_seq, reverse=not self._variants.lists_oldest_first)
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
            # A started run may have used hosts the job does not define; they may run again.
            known = job.host_ids + tuple(h for h in ex.original_hosts if h not in job.host_ids)
            hosts = run_hosts(body, known) or ex.original_hosts
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
        """The execution's events, oldest first: a bare array, or a page (see `status_page`)."""
        with self._lock:
            events = list(self._execution(account, job_id, execution_id).events)
            return status_answer(events, page, size, self._variants.status_page)

    def job_status_events(
        self, account: str, job_id: str, page: int | None, size: int | None
    ) -> list[dict[str, Any]] | dict[str, Any]:
        """Every event of the job's executions, oldest first, in the same forms."""
        with self._lock:
            events = [
                e for e in self._job_events.get(job_id, ()) if e["account_alias"] == account.upper()
            ]
            if not events:
                self._job(account, job_id)  # 404 for an unknown job; [] for a quiet one
            return status_answer(events, page, size, self._variants.status_page)

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
            expire = self._variants.expire_runs
            for ex in active:
                if ex.status == "PENDING":
                    if running[ex.account] < self._max_running:
                        running[ex.account] += 1
                        self._begin_run(ex)
                elif ex.status in ("STOPPING", "KILLING"):
                    self._runs.cancel(ex)
                elif expire and self._runs.overdue(ex, execution_ttl(ex.definition)):
                    self._runs.expire(ex, execution_ttl(ex.definition))
                elif ex.handle is not None:
                    self._runs.step(ex, ex.handle)
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
        hosts = ex.next_hosts
        self._runs.begin(
            ex,
            scripts={h: self._script_for(ex.definition, h) for h in hosts},
            host_vars={h: self._host_vars(ex.definition, h) for h in hosts},
        )

    def _emit(self, ex: SimExecution, event_type: str, message: dict[str, Any]) -> None:
        ms = now_ms(self._clock)
        event: dict[str, Any] = {
            "id": self._new_id(),
            # The switch is read as each event is made: the stored record is what was sent.
            "timestamp": ms / 1000 if self._variants.timestamps_in_seconds else ms,
            "account_alias": ex.account,
            "job_id": ex.job_id,
            "execution_id": ex.id,
            "event_type": event_type,
            "message": message,
            "notifications": [],
        }
        ex.events.append(event)
        self._job_events.setdefault(ex.job_id, []).append(event)
        job = self._jobs.get(ex.job_id)
        definition = job.definition if job is not None else ex.definition
        self.callbacks.submit(event, parse_callbacks(definition.get("callbacks")))

    @staticmethod
    def _host_vars(definition: Mapping[str, Any], host: str) -> Mapping[str, Any]:
        for entry in definition.get("hosts") or ():
            if entry.get("id") == host:
                host_vars: Mapping[str, Any] = entry.get("hostVars") or {}
                return host_vars
        return {}

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
