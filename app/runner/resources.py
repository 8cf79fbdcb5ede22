"""What the Runner client sends and returns besides execution documents: hosts, jobs, pages."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from app.redact import redact

T = TypeVar("T")

CALLBACK_LEVELS = ("DEBUG", "ERROR", "RESULT")


class ShapeError(ValueError):
    """An answer that is not the shape we expected; the message names what is wrong."""


@dataclass(frozen=True)
class RestartHost:
    """One entry of `hosts` in a start or restart body; the key is sent, never kept."""

    id: str
    ssh_private_key: str | None = field(default=None, repr=False)

    def to_body(self) -> dict[str, str]:
        entry = {"id": self.id}
        if self.ssh_private_key:
            entry["sshPrivateKey"] = self.ssh_private_key
        return entry


def run_body(hosts: Sequence[RestartHost] | None, ssh_private_key: str | None) -> dict[str, Any]:
    """The body of a start or restart: `{"hosts": [...], "sshPrivateKey": ...}` or `{}`."""
    body: dict[str, Any] = {}
    if hosts:
        body["hosts"] = [host.to_body() for host in hosts]
    if ssh_private_key:
        body["sshPrivateKey"] = ssh_private_key
    return body


@dataclass(frozen=True)
class JobCallback:
    url: str = field(repr=False)  # may carry the receiver's URL token
    level: str = "DEBUG"


@dataclass(frozen=True)
class RunnerJob:
    """A job as the Runner answers it; `definition` is the whole answer with secrets redacted."""

    id: str
    account_alias: str | None
    description: str | None
    status: str | None
    host_ids: tuple[str, ...]
    callbacks: tuple[JobCallback, ...]
    created_ms: int | None
    updated_ms: int | None
    definition: dict[str, Any] = field(repr=False, default_factory=dict)


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a list answer. `total_size` is None when the Runner sent a bare array."""

    items: tuple[T, ...]
    page: int
    size: int
    total_size: int | None
    skipped: int = 0  # items that could not be parsed (logged, not returned)

    @property
    def is_last(self) -> bool:
        seen = self.page * self.size + len(self.items) + self.skipped
        if self.total_size is not None and seen >= self.total_size:
            return True
        return len(self.items) + self.skipped < self.size


def _int_or_none(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value)
    if isinstance(value, str):
        try:
            return int(float(value))
        except ValueError:
            return None
    return None


def _str_or_none(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def parse_callbacks(value: Any) -> tuple[JobCallback, ...]:
    """`[{"url", "level"}]`, or the 2015 form: a plain array of URL strings (level DEBUG)."""
    if not isinstance(value, list):
        return ()
    callbacks = []
    for item in value:
        if isinstance(item, str) and item:
            callbacks.append(JobCallback(item))
        elif isinstance(item, Mapping) and isinstance(item.get("url"), str) and item["url"]:
            level = str(item.get("level") or "DEBUG").upper()
            callbacks.append(JobCallback(item["url"], level))
    return tuple(callbacks)


def unwrap_one(data: Any) -> Any:
    """The published examples wrap a single job in a one-item array."""
    if isinstance(data, list):
        if len(data) != 1:
            raise ShapeError(f"expected one item, got an array of {len(data)}")
        return data[0]
    return data


def parse_job(data: Any) -> RunnerJob:
    data = unwrap_one(data)
    if not isinstance(data, Mapping):
        raise ShapeError("a job is not a JSON object")
    job_id = _str_or_none(data.get("id"))
    if not job_id:
        raise ShapeError("a job has no id")
    hosts = data.get("hosts")
    host_ids: list[str] = []
    if isinstance(hosts, list):
        for host in hosts:
            if isinstance(host, Mapping):
                host_id = _str_or_none(host.get("id"))
                if host_id:
                    host_ids.append(host_id)
    return RunnerJob(
        id=job_id,
        account_alias=_str_or_none(data.get("accountAlias")),
        description=_str_or_none(data.get("description")),
        status=_str_or_none(data.get("status")),
        host_ids=tuple(host_ids),
        callbacks=parse_callbacks(data.get("callbacks")),
        created_ms=_int_or_none(data.get("createdTime")),
        updated_ms=_int_or_none(data.get("lastUpdatedTime")),
        definition=redact(dict(data)),
    )
