"""A realistic Runner status feed, shaped like the simulator's (docs/simulator.md).

Each execution is one run of a four-task play over three hosts: playbook_on_start,
playbook_on_play_start, per task a task_start and one result per host, playbook_on_stats,
playbook_result (20 events). A share of the executions fail on one host (a failed task with
stderr, or an unreachable host), so the receiver also takes the decision path.
"""

from __future__ import annotations

import random
import uuid
from typing import Any

TASKS = ("Gathering Facts", "install packages", "deploy configuration", "restart service")
ACCOUNTS = ("ACME", "BETA", "CORP", "DEVX")
STDERR = (
    "psql: could not connect to server: Connection timed out\n"
    '\tIs the server running on host "db1" and accepting TCP/IP connections on port 5432?'
)


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def execution_events(
    rng: random.Random, start_ms: int, fail: bool, jobs: list[tuple[str, str]]
) -> list[dict[str, Any]]:
    """The 20 events of one run; `jobs` is a pool of (account, job id) to pick from."""
    account, job_id = rng.choice(jobs)
    execution_id = _uuid(rng)
    hosts = [f"{job_id[:4]}-web{n}" for n in (1, 2, 3)]
    failing = rng.choice(hosts) if fail else None
    failure = rng.choice(("runner_on_failed", "runner_on_unreachable")) if fail else None
    fails_at = 0 if failure == "runner_on_unreachable" else 3
    clock = start_ms
    events: list[dict[str, Any]] = []

    def emit(event_type: str, message: dict[str, Any]) -> None:
        nonlocal clock
        clock += rng.randint(5, 400)
        events.append(
            {
                "id": _uuid(rng),
                "timestamp": clock,
                "account_alias": account,
                "job_id": job_id,
                "execution_id": execution_id,
                "event_type": event_type,
                "message": message,
                "notifications": [],
            }
        )

    stats = {
        h: {"ok": 0, "changed": 0, "unreachable": 0, "failures": 0, "skipped": 0} for h in hosts
    }
    emit("playbook_on_start", {"playbook": "site.yml"})
    emit("playbook_on_play_start", {"play": "all", "hosts": hosts})
    for index, task in enumerate(TASKS):
        emit("playbook_on_task_start", {"task": task})
        for host in hosts:
            if host == failing and index == fails_at:
                if failure == "runner_on_unreachable":
                    msg = (
                        "Failed to connect to the host via ssh: "
                        f"connect to host {host} port 22: Connection timed out"
                    )
                    emit(
                        failure,
                        {
                            "host": host,
                            "task": task,
                            "msg": msg,
                            "unreachable": True,
                            "changed": False,
                        },
                    )
                    stats[host]["unreachable"] += 1
                else:
                    emit(
                        "runner_on_failed",
                        {
                            "host": host,
                            "task": task,
                            "msg": "non-zero return code",
                            "stderr": STDERR,
                            "stdout": "",
                            "rc": 2,
                            "changed": False,
                            "cmd": "systemctl restart app",
                        },
                    )
                    stats[host]["failures"] += 1
            elif host == failing and index > fails_at:
                continue  # a failed host drops out of the play
            else:
                changed = task != "Gathering Facts"
                emit("runner_on_ok", {"host": host, "task": task, "changed": changed, "msg": ""})
                stats[host]["ok"] += 1
                stats[host]["changed"] += int(changed)
    emit("playbook_on_stats", {"stats": stats})
    status = "FAILURE" if fail else "SUCCESS"
    emit("playbook_result", {"status": status, "stats": stats})
    return events


def failed_document(
    execution_id: str, job_id: str, hosts: list[str], now_ms: int, account: str = "BENCH"
) -> dict[str, Any]:
    """An execution document of a run that ended in FAILURE just now, naming `hosts`."""
    return {
        "execution_id": execution_id,
        "job_id": job_id,
        "account_alias": account,
        "status": "FAILURE",
        "timers": [{"start": now_ms - 5000, "end": now_ms - 100}],
        "failed_hosts": hosts,
    }


def job_pool(rng: random.Random, jobs: int) -> list[tuple[str, str]]:
    return [(rng.choice(ACCOUNTS), _uuid(rng)) for _ in range(jobs)]


def feed(
    executions: int,
    seed: int,
    fail_share: float = 0.25,
    jobs: int = 40,
    start_ms: int = 1_760_000_000_000,
) -> list[list[dict[str, Any]]]:
    """`executions` runs, each a list of its events in order, a second apart from `start_ms`."""
    rng = random.Random(seed)
    pool = job_pool(rng, jobs)
    start = start_ms
    return [
        execution_events(rng, start + n * 1000, rng.random() < fail_share, pool)
        for n in range(executions)
    ]


def flat(runs: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return [event for run in runs for event in run]


def chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]
