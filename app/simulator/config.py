"""Settings of the Runner simulator, and its runtime fault switches."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

DEFAULT_TOKEN_TTL = 14 * 24 * 3600.0
HOLD_STAGES = ("before", "after")
ERROR_STATUSES = (500, 502, 503, 504)
ENGINES = ("scripted", "ansible")


class SettingsError(ValueError):
    """A setting or fault switch with a bad value; the message says which and why."""


@dataclass(frozen=True)
class SimUser:
    username: str
    password: str = field(repr=False)
    account_alias: str
    location_alias: str = "WA1"
    roles: tuple[str, ...] = ("ServerAdmin", "AccountAdmin")


@dataclass(frozen=True)
class SimulatorConfig:
    """What the simulator is started with; `speed` and faults can change at runtime.

    `speed` is ticks per second: 1.0 is the demo pace (a run takes about 7 s), 200 makes a
    run take a few tens of milliseconds, and 0 stops the clock (advance with
    `POST /_sim/advance` or `Simulator.advance()`).
    """

    users: tuple[SimUser, ...] = (SimUser("user@example.com", "simulator-password", "XXXX"),)
    seed: int | None = None
    speed: float = 1.0
    token_ttl: float = DEFAULT_TOKEN_TTL
    max_running_per_account: int = 4
    execution_shape: str = "timers"  # "timers", or "legacy": top-level start/end and an id
    callback_connect_timeout: float = 0.5
    callback_read_timeout: float = 2.0
    allow_remote_callbacks: bool = False
    host_scripts: tuple[tuple[str, Any], ...] = ()  # (host glob, script), first match wins
    faults: Mapping[str, Any] = field(default_factory=dict)
    hold_timeout: float = 300.0
    engine: str = "scripted"  # "scripted", or "ansible": real ansible-playbook runs
    # The variant switches (class Variants): what the published docs leave open.
    execution_get_404: bool = False
    lists_oldest_first: bool = False
    expire_runs: bool = False
    timestamps_in_seconds: bool = False
    status_page: bool | None = None

    def __post_init__(self) -> None:
        if not self.users:
            raise SettingsError("the simulator needs at least one user")
        if self.speed < 0:
            raise SettingsError("speed must be >= 0")
        if self.token_ttl <= 0:
            raise SettingsError("token_ttl must be > 0")
        if self.max_running_per_account < 1:
            raise SettingsError("max_running_per_account must be >= 1")
        if self.execution_shape not in ("timers", "legacy"):
            raise SettingsError("execution_shape must be 'timers' or 'legacy'")
        if self.engine not in ENGINES:
            raise SettingsError(f"engine must be one of {', '.join(ENGINES)}")
        self.variants()  # checks every switch

    def variants(self) -> Variants:
        """The variant switches this simulator starts with."""
        return Variants().updated({name: getattr(self, name) for name in Variants.names()})

    @classmethod
    def single_user(
        cls,
        username: str,
        password: str,
        account_alias: str = "XXXX",
        **options: Any,
    ) -> SimulatorConfig:
        return cls(users=(SimUser(username, password, account_alias),), **options)


@dataclass(frozen=True)
class Faults:
    """Runtime fault switches. Rates are shares in 0..1, drawn from the seeded generator.

    The request faults (errors, latency, hangs) apply to Runner API calls (login included)
    whose "METHOD /path" matches `match` (a regex; None matches all), never to `/_sim/`.
    """

    error_rate: float = 0.0
    error_status: int = 503
    fail_next: int = 0
    latency_ms: int = 0
    hang_rate: float = 0.0
    hang_next: int = 0
    hang_seconds: float = 30.0
    match: str | None = None
    drop_callbacks: float = 0.0
    duplicate_callbacks: float = 0.0
    reorder_callbacks: float = 0.0
    hold_restart: str | None = None
    hold_count: int | None = None

    def updated(self, changes: Mapping[str, Any]) -> Faults:
        """A copy with `changes` applied, every value checked."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise SettingsError(f"unknown fault switch(es): {', '.join(unknown)}")
        values: dict[str, Any] = {}
        for name, value in changes.items():
            values[name] = _check_fault(name, value)
        return replace(self, **values)

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class Variants:
    """Switches for what the real service may do but its published docs leave open
    (docs/simulator.md, "Variant switches"). All off by default: the simulator then answers
    as docs/runner.md reads the docs; a test turns one on to meet the other reading.

    `status_page` has three values: None (the default) answers a page only when `page` or
    `size` is asked for, True always a page, False always a bare array.
    """

    execution_get_404: bool = False  # GET of one execution answers 404; the lists still work
    lists_oldest_first: bool = False  # executions lists oldest first instead of newest first
    expire_runs: bool = False  # a run longer than the job's executionTtl ends EXPIRED
    timestamps_in_seconds: bool = False  # status events' timestamp in epoch seconds
    status_page: bool | None = None

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    def updated(self, changes: Mapping[str, Any]) -> Variants:
        """A copy with `changes` applied, every value checked."""
        unknown = sorted(set(changes) - set(self.names()))
        if unknown:
            raise SettingsError(f"unknown variant switch(es): {', '.join(unknown)}")
        for name, value in changes.items():
            allowed = (True, False, None) if name == "status_page" else (True, False)
            if not any(value is choice for choice in allowed):
                wanted = "true, false or null" if name == "status_page" else "true or false"
                raise SettingsError(f"{name} must be {wanted}")
        return replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.names()}


_RATES = ("error_rate", "hang_rate", "drop_callbacks", "duplicate_callbacks", "reorder_callbacks")
_COUNTS = ("fail_next", "hang_next", "latency_ms")


def _check_fault(name: str, value: Any) -> Any:
    if name in _RATES:
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            raise SettingsError(f"{name} must be a number between 0 and 1")
        return float(value)
    if name in _COUNTS:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise SettingsError(f"{name} must be a whole number >= 0")
        return value
    if name == "hold_count":
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 1
        ):
            raise SettingsError("hold_count must be null or a whole number >= 1")
        return value
    if name == "error_status":
        if value not in ERROR_STATUSES:
            raise SettingsError(f"error_status must be one of {list(ERROR_STATUSES)}")
        return value
    if name == "hang_seconds":
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 3600:
            raise SettingsError("hang_seconds must be a number of seconds in 0..3600")
        return float(value)
    if name == "match":
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            raise SettingsError("match must be a regular expression or null")
        try:
            re.compile(value)
        except re.error as exc:
            raise SettingsError(f"match is not a valid regular expression: {exc}") from None
        return value
    if name == "hold_restart":
        if value not in (None, *HOLD_STAGES):
            raise SettingsError("hold_restart must be null, 'before' or 'after'")
        return value
    raise SettingsError(f"unknown fault switch: {name}")  # pragma: no cover
