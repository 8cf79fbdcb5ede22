"""The simulated Runner's answers and checks: errors, pages, job definitions, fleet specs."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping
from typing import Any

from app.simulator.scripts import ScriptError, parse_script

LOGIN_ERROR = "We didn't recognize the username or password you entered. Please try again."
INVALID_REQUEST = "The request is invalid."
NO_RESOURCE = "No HTTP resource was found that matches the request URI."
FAILED = frozenset({"FAILURE", "INIT_FAILURE"})
FINAL = frozenset({"SUCCESS", "FAILURE", "INIT_FAILURE", "STOPPED", "KILLED", "EXPIRED"})
STOPPABLE = frozenset({"PENDING", "INITIALIZING", "RUNNING", "STOPPING"})
LEVELS = ("DEBUG", "ERROR", "RESULT")
MAX_PAGE_SIZE = 100
DEFAULT_EXECUTION_TTL = 180  # minutes, when a job gives none (or null)
MAX_HOSTS = 1000
CALL_LOG_LIMIT = 10_000


class SimError(Exception):
    """An error answer of the simulated Runner: a status, a message, maybe a modelState."""

    def __init__(
        self, status: int, message: str, model_state: Mapping[str, list[str]] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.model_state = dict(model_state or {})

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"message": self.message}
        if self.model_state:
            body["modelState"] = self.model_state
        return body


def invalid(model_state: Mapping[str, list[str]]) -> SimError:
    return SimError(400, INVALID_REQUEST, model_state)


def now_ms(clock: Callable[[], float]) -> int:
    return int(clock() * 1000)


def fleet_job(description: str, hosts: Any, callbacks: Any = ()) -> dict[str, Any]:
    """A job definition whose hosts carry scripts: `hosts` maps host id → script
    (or is a list of host ids, all `ok`); `callbacks` is a list of URLs or `{url, level}`."""
    if isinstance(hosts, Mapping):
        entries = [{"id": str(h), "hostVars": {"sim_script": s}} for h, s in hosts.items()]
    elif isinstance(hosts, list):
        entries = [{"id": str(h), "hostVars": {}} for h in hosts]
    else:
        raise invalid({"hosts": ["a map of host id to script, or a list of host ids"]})
    return {
        "description": description,
        "repository": {
            "url": "https://example.invalid/simulated/playbooks.git",
            "branch": "main",
            "defaultPlaybook": "site.yml",
        },
        "hosts": entries,
        "callbacks": [
            c if isinstance(c, Mapping) else {"url": c, "level": "DEBUG"} for c in (callbacks or [])
        ],
    }


def repository_log(definition: Mapping[str, Any], clock: Callable[[], float]) -> Any:
    repository = definition.get("repository")
    if not isinstance(repository, Mapping) or not repository.get("url"):
        return None
    commit = hashlib.sha1(str(repository.get("url")).encode(), usedforsecurity=False).hexdigest()
    return {
        "recent_commit": [
            {
                "commit": commit,
                "author": "Simulated Author",
                "author_email": "author@example.invalid",
                "date": time.strftime("%a %b %d %H:%M:%S %Y +0000", time.gmtime(clock())),
                "message": "Simulated commit",
            }
        ],
        "tags": [],
    }


def page_of(items: list[dict[str, Any]], page: int, size: int) -> dict[str, Any]:
    return {
        "totalSize": len(items),
        "page": page,
        "size": size,
        "results": items[page * size : (page + 1) * size],
    }


def status_answer(
    events: list[dict[str, Any]], page: int | None, size: int | None, as_page: bool | None
) -> list[dict[str, Any]] | dict[str, Any]:
    """The status API's answer: a page `{totalSize, page, size, results}` when `as_page`, a
    bare array when not, and when None (the default) a page only if `page` or `size` was
    asked for. A bare array asked for a page holds that page's slice."""
    asked = page is not None or size is not None
    first, count = page or 0, size or MAX_PAGE_SIZE
    if as_page or (as_page is None and asked):
        return page_of(events, first, count)
    if asked:
        return events[first * count : (first + 1) * count]
    return events


def validate_job(body: Any) -> dict[str, Any]:
    """The job definition to keep: checked, and without any private key."""
    if not isinstance(body, Mapping):
        raise invalid({"job": ["The job definition must be a JSON object."]})
    errors: dict[str, list[str]] = {}
    definition = {k: v for k, v in body.items() if k not in ("sshPrivateKey", "id")}
    if "description" in body and not isinstance(body["description"], str | None):
        errors["description"] = ["The description must be a string."]
    if body.get("executionTtl") is not None and (
        isinstance(body["executionTtl"], bool)
        or not isinstance(body["executionTtl"], int)
        or body["executionTtl"] < 1
    ):
        errors["executionTtl"] = ["executionTtl must be a whole number of minutes >= 1."]
    hosts = body.get("hosts") or []
    kept_hosts = []
    if not isinstance(hosts, list) or len(hosts) > MAX_HOSTS:
        errors["hosts"] = ["hosts must be a list."]
        hosts = []
    seen: set[str] = set()
    for index, host in enumerate(hosts):
        where = f"hosts[{index}]"
        if not isinstance(host, Mapping):
            errors[where] = ["A host must be an object."]
            continue
        host_id = host.get("id")
        if not isinstance(host_id, str) or not host_id.strip():
            errors[f"{where}.id"] = ["The id field is required."]
            continue
        if host_id in seen:
            errors[f"{where}.id"] = [f"Host {host_id} is listed twice."]
        seen.add(host_id)
        host_vars = host.get("hostVars") or {}
        if not isinstance(host_vars, Mapping):
            errors[f"{where}.hostVars"] = ["hostVars must be an object."]
            host_vars = {}
        elif "sim_script" in host_vars:
            try:
                parse_script(host_vars["sim_script"])
            except ScriptError as exc:
                errors[f"{where}.hostVars.sim_script"] = [str(exc)]
        kept_hosts.append(
            {**{k: v for k, v in host.items() if k != "sshPrivateKey"}, "hostVars": dict(host_vars)}
        )
    definition["hosts"] = kept_hosts
    callbacks = body.get("callbacks") or []
    if not isinstance(callbacks, list):
        errors["callbacks"] = ["callbacks must be a list."]
        callbacks = []
    for index, callback in enumerate(callbacks):
        url = (
            callback
            if isinstance(callback, str)
            else (callback.get("url") if isinstance(callback, Mapping) else None)
        )
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            errors[f"callbacks[{index}].url"] = ["The url must be an http(s) URL."]
        if isinstance(callback, Mapping):
            level = str(callback.get("level") or "DEBUG").upper()
            if level not in LEVELS:
                errors[f"callbacks[{index}].level"] = [f"level must be one of {', '.join(LEVELS)}."]
    if errors:
        raise invalid(errors)
    return definition


def run_hosts(body: Any, job_hosts: tuple[str, ...], any_host: bool = False) -> tuple[str, ...]:
    """The host ids of a start or restart body (`()` for none); keys are checked, not kept.

    Hosts must be among `job_hosts` unless `any_host` (a start may name hosts the job does
    not define: the run then uses the hosts given)."""
    if body is None:
        return ()
    if not isinstance(body, Mapping):
        raise invalid({"body": ["The body must be a JSON object."]})
    errors: dict[str, list[str]] = {}
    if "sshPrivateKey" in body and not isinstance(body["sshPrivateKey"], str | None):
        errors["sshPrivateKey"] = ["sshPrivateKey must be a base64 string."]
    hosts = body.get("hosts")
    if hosts is None:
        hosts = []
    if not isinstance(hosts, list):
        errors["hosts"] = ["hosts must be a list."]
        hosts = []
    found: list[str] = []
    for index, host in enumerate(hosts):
        if not isinstance(host, Mapping):
            errors[f"hosts[{index}]"] = ["A host must be an object."]
            continue
        host_id = host.get("id")
        if not isinstance(host_id, str) or not host_id.strip():
            errors[f"hosts[{index}].id"] = ["The id field is required."]
            continue
        if "sshPrivateKey" in host and not isinstance(host["sshPrivateKey"], str | None):
            errors[f"hosts[{index}].sshPrivateKey"] = ["sshPrivateKey must be a base64 string."]
        if host_id not in found:
            found.append(host_id)
    if errors:
        raise invalid(errors)
    unknown = [h for h in found if h not in job_hosts]
    if unknown and not any_host:
        raise SimError(400, f"Host(s) not defined in the job: {', '.join(unknown)}.")
    return tuple(found)
