"""The real engine: each run is an `ansible-playbook` process on the bundled play.

The play (app/simulator/ansible/site.yml) runs against an inventory of the run's hosts only
(a restart of some hosts runs only those). Hosts connect with `ansible_connection=local`;
an unreachable host gets SSH to a loopback port that is bound but not listening, so Ansible
itself reports it unreachable; a failing host runs a command that really fails, writing its
message to stderr. The bundled callback plugin (ansible/callback_plugins/respawn_runner.py)
turns Ansible's callback events into Runner status events, which `poll` reads and hands to
the service; the outcome comes from Ansible's own stats. Each run has a private directory
(HOME, ANSIBLE_HOME, temp dirs, an empty ansible.cfg) so it needs no setup and reads no
user or system configuration, and a time bound.

Which hosts fail or are unreachable comes from their host scripts (the same `sim_script`
host var and glob rules as the scripted engine, docs/simulator.md) or from plain host vars:
`sim_unreachable`, `sim_fail`, `sim_fail_message`, `sim_fail_rc`, `sim_fail_task`,
`sim_async`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO

from app.simulator.engine import (
    EngineEvent,
    HostStats,
    RunContext,
    RunOutcome,
    StepResult,
    init_failure_of,
    planned_outcomes,
)
from app.simulator.scripts import OK

ANSIBLE_DIR = Path(__file__).with_name("ansible")
PLAYBOOK = ANSIBLE_DIR / "site.yml"
CALLBACK_DIR = ANSIBLE_DIR / "callback_plugins"
CALLBACK_NAME = "respawn_runner"
EVENTS_ENV = "RESPAWN_SIM_EVENTS"  # read by the callback plugin
PLAY_TASKS = ("check connection", "install packages", "deploy configuration", "restart service")
DEFAULT_FAILED_TASK = {"fail": "restart service", "async_failed": "deploy configuration"}
DEFAULT_STDERR = {
    "fail": "Job for app.service failed because the control process exited with error code.",
    "async_failed": "async task did not complete within the requested time",
}
DEFAULT_TIMEOUT = 300.0  # seconds a run may take before it is killed and fails
DEFAULT_POLL_WAIT = 0.25  # seconds one poll waits for Ansible to report something
LOG_TAIL = 2000  # characters of ansible-playbook's own output kept in an error message
FAILURE_EVENTS = frozenset({"runner_on_failed", "runner_on_unreachable", "runner_on_async_failed"})
SSH_ARGS = (
    "-o ControlMaster=no -o BatchMode=yes -o StrictHostKeyChecking=no "
    "-o UserKnownHostsFile=/dev/null -o ConnectTimeout=5"
)


class AnsibleNotInstalled(RuntimeError):
    """ansible-playbook is neither next to the running Python nor on PATH."""


def find_ansible_playbook() -> str:
    """ansible-playbook next to the running Python (a virtualenv's), else on PATH."""
    beside = Path(sys.executable).parent / "ansible-playbook"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("ansible-playbook")
    if found:
        return found
    raise AnsibleNotInstalled(
        "the ansible engine needs ansible-core: ansible-playbook was found neither next to "
        f"{sys.executable} nor on PATH (pip install ansible-core; see requirements-dev.txt)"
    )


class AnsibleEngine:
    """Runs each run as `ansible-playbook`; raises AnsibleNotInstalled when it cannot."""

    def __init__(
        self,
        timeout: float = DEFAULT_TIMEOUT,
        poll_wait: float = DEFAULT_POLL_WAIT,
        executable: str | None = None,
        forks: int = 10,
    ) -> None:
        self.executable = executable or find_ansible_playbook()
        self.timeout = timeout
        self.poll_wait = poll_wait
        self.forks = forks

    def start_run(self, context: RunContext) -> AnsibleRun:
        return AnsibleRun(self, context)


class AnsibleRun:
    """One ansible-playbook process, polled once per simulator tick."""

    def __init__(self, engine: AnsibleEngine, context: RunContext) -> None:
        self._engine = engine
        self._context = context
        self._outcomes = planned_outcomes(context)
        # A host scripted to fail initialization fails the run before Ansible starts.
        self._init_failure = init_failure_of(context, self._outcomes)
        self._dir: Path | None = None
        self._closed_port: socket.socket | None = None
        self._events: BinaryIO | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._partial = b""
        self._started = False
        self._stats: dict[str, Any] | None = None
        self._failed_seen: list[str] = []
        self._done = False
        self._deadline = time.monotonic() + engine.timeout
        if self._init_failure is None:
            try:
                self._launch()
            except BaseException:
                self._cleanup()
                raise

    # -- the process ---------------------------------------------------------------------

    def _launch(self) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="respawn-sim-ansible-"))
        for sub in ("home", "tmp", "remote-tmp", "async", "cp"):
            (self._dir / sub).mkdir()
        inventory = self._dir / "inventory.json"
        inventory.write_text(json.dumps({"all": {"hosts": self._inventory()}}), encoding="utf-8")
        config = self._dir / "ansible.cfg"
        config.write_text("# empty: every setting comes from the environment\n", "utf-8")
        events = self._dir / "events.jsonl"
        events.touch()
        self._events = events.open("rb")
        with (self._dir / "ansible.log").open("wb") as output:
            self._process = subprocess.Popen(  # noqa: S603 - our own fixed command line
                [
                    self._engine.executable,
                    "-i",
                    str(inventory),
                    "--forks",
                    str(self._engine.forks),
                    str(PLAYBOOK),
                ],
                cwd=self._dir,
                env=self._environment(events),
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, killed as one
            )

    def _environment(self, events: Path) -> dict[str, str]:
        assert self._dir is not None
        # Nothing of the caller's Ansible settings leaks in; the rest (PATH, ...) is kept.
        env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
        env.update(
            HOME=str(self._dir / "home"),
            LC_ALL="C.UTF-8",  # ansible-core refuses to run under a non-UTF-8 locale
            LANG="C.UTF-8",
            ANSIBLE_CONFIG=str(self._dir / "ansible.cfg"),
            ANSIBLE_HOME=str(self._dir / "home" / ".ansible"),
            ANSIBLE_LOCAL_TEMP=str(self._dir / "tmp"),
            ANSIBLE_REMOTE_TEMP=str(self._dir / "remote-tmp"),
            ANSIBLE_CALLBACK_PLUGINS=str(CALLBACK_DIR),
            ANSIBLE_STDOUT_CALLBACK=CALLBACK_NAME,
            ANSIBLE_HOST_KEY_CHECKING="False",
            ANSIBLE_RETRY_FILES_ENABLED="False",
            ANSIBLE_NOCOLOR="1",
            ANSIBLE_DEPRECATION_WARNINGS="False",
            ANSIBLE_GATHERING="explicit",
            ANSIBLE_PIPELINING="True",  # no module files to copy: each task starts sooner
            ANSIBLE_TIMEOUT="5",
            ANSIBLE_SSH_ARGS=SSH_ARGS,
            ANSIBLE_SSH_CONTROL_PATH_DIR=str(self._dir / "cp"),
        )
        env[EVENTS_ENV] = str(events)
        return env

    def _inventory(self) -> dict[str, dict[str, Any]]:
        hosts: dict[str, dict[str, Any]] = {}
        for host in self._context.hosts:
            given = self._context.host_vars.get(host, {})
            # The job's own vars go along, except connection settings: the engine owns those.
            host_vars = {k: v for k, v in given.items() if not str(k).startswith("ansible_")}
            outcome = self._outcomes[host]
            script = self._context.scripts.get(host, OK)
            if outcome in DEFAULT_FAILED_TASK:
                task = script.task if script.task in PLAY_TASKS else DEFAULT_FAILED_TASK[outcome]
                host_vars.update(sim_fail=True, sim_fail_task=task)
                host_vars["sim_async"] = outcome == "async_failed"
                if script.message is not None or "sim_fail_message" not in host_vars:
                    host_vars["sim_fail_message"] = script.message or DEFAULT_STDERR[outcome]
                if script.rc != 1 or "sim_fail_rc" not in host_vars:
                    host_vars["sim_fail_rc"] = script.rc
            unreachable = outcome == "unreachable" or _truthy(host_vars.get("sim_unreachable"))
            host_vars.update(self._connection(unreachable))
            hosts[host] = host_vars
        return hosts

    def _connection(self, unreachable: bool) -> dict[str, Any]:
        assert self._dir is not None
        common = {"ansible_async_dir": str(self._dir / "async")}
        if not unreachable:
            return {
                **common,
                "ansible_connection": "local",
                "ansible_python_interpreter": sys.executable,
            }
        if self._closed_port is None:
            # Bound and never listening: a connection to it is refused at once, and no other
            # process can take the port while the run holds it.
            self._closed_port = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self._closed_port.bind(("127.0.0.1", 0))
        return {
            **common,
            "ansible_connection": "ssh",
            "ansible_host": "127.0.0.1",
            "ansible_port": self._closed_port.getsockname()[1],
            "ansible_user": "respawn-sim",
        }

    @property
    def alive(self) -> bool:
        """Whether its ansible-playbook process is still running."""
        return self._process is not None and self._process.poll() is None

    # -- the RunHandle -------------------------------------------------------------------

    def poll(self) -> StepResult:
        if self._done:
            return StepResult()
        if self._init_failure is not None:
            self._done = True
            return StepResult(outcome=self._init_failure)
        process = self._process
        assert process is not None
        wait_until = time.monotonic() + self._engine.poll_wait
        while True:
            events = self._read()
            exited = process.poll() is not None
            if events or exited or time.monotonic() >= wait_until:
                break
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=0.02)  # returns at once when Ansible exits
        if exited:
            events += self._read()  # everything Ansible wrote before it exited
            outcome = self._outcome(process.returncode)
        elif time.monotonic() > self._deadline:
            self._kill()
            outcome = RunOutcome(
                "FAILURE",
                failed_hosts=tuple(self._context.hosts),
                message=f"ansible-playbook did not finish within {self._engine.timeout:g} s",
            )
        else:
            return StepResult(tuple(events), running=self._started)
        self._done = True
        self._cleanup()
        return StepResult(tuple(events), running=self._started, outcome=outcome)

    def cancel(self) -> None:
        self._done = True
        self._kill()
        self._cleanup()

    # -- reading and judging -------------------------------------------------------------

    def _read(self) -> list[EngineEvent]:
        """The complete lines the callback plugin has written since the last read."""
        if self._events is None:
            return []
        data = self._partial + self._events.read()
        lines = data.split(b"\n")
        self._partial = lines.pop()  # an unfinished line waits for the next read
        found = []
        for line in lines:
            event = self._event(line)
            if event is not None:
                found.append(event)
        return found

    def _event(self, line: bytes) -> EngineEvent | None:
        try:
            record = json.loads(line)
        except ValueError:
            return None
        if not isinstance(record, Mapping):
            return None
        event_type, message = record.get("event_type"), record.get("message")
        if not isinstance(event_type, str) or not isinstance(message, Mapping):
            return None
        if event_type == "playbook_on_start":
            self._started = True
        elif event_type == "playbook_on_stats":
            stats = message.get("stats")
            self._stats = dict(stats) if isinstance(stats, Mapping) else {}
        elif event_type in FAILURE_EVENTS:
            host = message.get("host")
            if isinstance(host, str) and host not in self._failed_seen:
                self._failed_seen.append(host)
        return EngineEvent(event_type, dict(message))

    def _outcome(self, returncode: int) -> RunOutcome:
        hosts = self._context.hosts
        if not self._started:
            return RunOutcome(
                "INIT_FAILURE",
                message=f"ansible-playbook exited with rc {returncode} before the play "
                f"started: {self._log_tail()}",
            )
        if self._stats is None:  # Ansible died mid-play: what it reported is all we know
            failed = tuple(h for h in hosts if h in self._failed_seen) or hosts
            return RunOutcome(
                "FAILURE",
                failed,
                message=f"ansible-playbook exited with rc {returncode}: {self._log_tail()}",
            )
        stats = {h: _host_stats(self._stats.get(h)) for h in hosts if h in self._stats}
        failed = tuple(h for h, s in stats.items() if s.failures or s.unreachable)
        if failed or returncode == 0:
            return RunOutcome("FAILURE" if failed else "SUCCESS", failed, stats)
        return RunOutcome(
            "FAILURE",
            (),
            stats,
            message=f"ansible-playbook exited with rc {returncode}: {self._log_tail()}",
        )

    def _log_tail(self) -> str:
        if self._dir is None:
            return ""
        try:
            text = (self._dir / "ansible.log").read_text("utf-8", errors="replace")
        except OSError:
            return ""
        return text.strip()[-LOG_TAIL:]

    # -- the end -------------------------------------------------------------------------

    def _kill(self) -> None:
        process = self._process
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):  # it may have ended meanwhile
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)

    def _cleanup(self) -> None:
        if self._events is not None:
            self._events.close()
            self._events = None
        if self._closed_port is not None:
            self._closed_port.close()
            self._closed_port = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


def _host_stats(counts: Any) -> HostStats:
    if not isinstance(counts, Mapping):
        return HostStats()

    def count(key: str) -> int:
        value = counts.get(key, 0)
        return value if isinstance(value, int) and not isinstance(value, bool) else 0

    return HostStats(
        count("ok"), count("changed"), count("unreachable"), count("failures"), count("skipped")
    )


def _truthy(value: Any) -> bool:
    """An Ansible-style boolean host var: true, "yes", "1", ..."""
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)
