"""The policy, the engine's input and its output: frozen dataclasses, no I/O."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from types import MappingProxyType
from typing import Final, Literal
from zoneinfo import ZoneInfo

from app.policy.notify_model import NotifyConfig
from app.policy.patterns import Glob, MessagePattern

Action = Literal["restart", "skip"]
Verdict = Literal["restart", "skip", "held"]
"""A decision's action: ``held`` is a restart queued but not due while its signature's
breaker is open (docs/policy.md, "Error-signature breaker")."""
HostsMode = Literal["failed", "all_failed", "none"]

ACTIONS: Final[tuple[str, ...]] = ("restart", "skip")
HOSTS_MODES: Final[tuple[str, ...]] = ("failed", "all_failed", "none")
FAILURE_CLASSES: Final[tuple[str, ...]] = (
    "unreachable",
    "task_failed",
    "async_failed",
    "init_failure",
    "unknown",
)
FAILED_STATUSES: Final[tuple[str, ...]] = ("FAILURE", "INIT_FAILURE")
NO_RULE: Final = "defaults"
"""``Decision.rule`` when no rule matched and the defaults decided."""


# --- reason codes -------------------------------------------------------------------------------


class ReasonCode:
    """Every ``Decision.reason_code`` and ``ExcludedHost.code``; docs/policy.md explains each."""

    RESTART: Final = "restart"
    NOT_FAILED: Final = "not_failed"
    PAUSED: Final = "paused"
    RULE_SKIP: Final = "rule_skip"
    MAX_RESTARTS: Final = "max_restarts"
    DEADLINE: Final = "deadline"
    NO_FAILED_HOSTS: Final = "no_failed_hosts"
    QUARANTINE: Final = "quarantine"
    UNSAFE_CHANGED: Final = "unsafe_changed"
    BUDGET_PER_JOB: Final = "budget_per_job"
    BUDGET_PER_ACCOUNT: Final = "budget_per_account"
    BUDGET_GLOBAL: Final = "budget_global"
    BREAKER_OPEN: Final = "breaker_open"
    SYSTEMIC: Final = "systemic"
    """A rule with a ``failed_hosts`` condition said skip: the run failed, not a host."""
    BLACKOUT: Final = "blackout"
    """Deferring the restart to the end of a blackout would pass its deadline."""
    SIGNATURE_OPEN: Final = "signature_open"
    """The failure's error-signature breaker is open: the restart is held (action ``held``)."""
    NOT_MATCHED: Final = "not_matched"
    """Only for excluded hosts: the matching rule's host conditions left this host out."""


REASON_CODES: Final[tuple[str, ...]] = (
    ReasonCode.RESTART,
    ReasonCode.NOT_FAILED,
    ReasonCode.PAUSED,
    ReasonCode.RULE_SKIP,
    ReasonCode.SYSTEMIC,
    ReasonCode.MAX_RESTARTS,
    ReasonCode.DEADLINE,
    ReasonCode.BLACKOUT,
    ReasonCode.NO_FAILED_HOSTS,
    ReasonCode.QUARANTINE,
    ReasonCode.UNSAFE_CHANGED,
    ReasonCode.BUDGET_PER_JOB,
    ReasonCode.BUDGET_PER_ACCOUNT,
    ReasonCode.BUDGET_GLOBAL,
    ReasonCode.BREAKER_OPEN,
    ReasonCode.SIGNATURE_OPEN,
)
"""Decision reason codes, in the order the engine checks them."""


# --- problems -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PolicyProblem:
    """One thing wrong (or, in ``Policy.warnings``, suspicious) in a policy file."""

    source: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.source}:{self.line}: {self.message}"


class PolicyError(ValueError):
    """A policy text was refused; ``problems`` lists every problem found, ordered by line."""

    def __init__(self, problems: tuple[PolicyProblem, ...] | list[PolicyProblem]) -> None:
        self.problems: tuple[PolicyProblem, ...] = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


# --- the policy ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Backoff:
    initial: timedelta = timedelta(seconds=30)
    factor: float = 2.0
    max: timedelta = timedelta(minutes=10)
    jitter: float = 0.1


@dataclass(frozen=True)
class Settings:
    """What to do once a rule (or the defaults) applies; a rule overrides any of these."""

    action: Action = "restart"
    hosts: HostsMode = "failed"
    max_restarts: int = 3
    backoff: Backoff = Backoff()
    deadline: timedelta | None = timedelta(hours=6)
    """``None`` means no deadline (``deadline: null``)."""
    require_unchanged: bool = False
    ignore_blackouts: bool = False
    """Restart even inside a blackout window (for emergency jobs)."""
    notify: bool = False
    """A skip by this rule (or the defaults) is reported as `gave_up` too, not only the skips
    that give up on a failure (max_restarts, deadline, budgets, quarantine, blackout)."""


@dataclass(frozen=True)
class FailedShare:
    """``when.failed_hosts``: how much of the run failed. All given bounds must hold.

    ``min``/``max`` bound the number of failed hosts; ``ratio_over`` requires failed / all
    hosts of the run to be strictly above it, and does not match when the run's host count
    is unknown (``DecisionInput.run_host_count`` is None).
    """

    min: int | None = None
    max: int | None = None
    ratio_over: float | None = None


@dataclass(frozen=True)
class When:
    """A rule's conditions; all given ones must hold, an empty ``When`` matches every failure.

    ``account``, ``job`` and ``status`` are about the execution; ``host``, ``failure`` and
    ``message`` are about one failed host, and must all hold for the same host.
    Within a key, a list means "any of these".
    """

    account: tuple[Glob, ...] = ()
    job: tuple[Glob, ...] = ()
    status: tuple[str, ...] = ()
    host: tuple[Glob, ...] = ()
    failure: tuple[str, ...] = ()
    message: tuple[MessagePattern, ...] = ()
    failed_hosts: FailedShare | None = None
    """About the execution's run as a whole (see ``FailedShare``)."""

    @property
    def has_host_conditions(self) -> bool:
        return bool(self.host or self.failure or self.message)

    @property
    def is_catch_all(self) -> bool:
        return not (
            self.account
            or self.job
            or self.status
            or self.failed_hosts is not None
            or self.has_host_conditions
        )


@dataclass(frozen=True)
class Rule:
    name: str
    when: When
    settings: Settings
    """The defaults with this rule's overrides applied."""
    line: int = 0
    description: str | None = None


@dataclass(frozen=True)
class Budget:
    """At most ``restarts`` automatic restarts inside any sliding ``window``."""

    restarts: int
    window: timedelta


@dataclass(frozen=True)
class HostLimit:
    """A host with ``failures`` failures inside ``window`` is not restarted for ``quarantine``."""

    failures: int = 5
    window: timedelta = timedelta(hours=24)
    quarantine: timedelta = timedelta(hours=6)

    @property
    def lookback(self) -> timedelta:
        """How far back ``DecisionInput.host_failure_times`` must reach."""
        return self.window + self.quarantine


DEFAULT_PER_JOB: Final = Budget(restarts=10, window=timedelta(hours=1))
DEFAULT_PER_ACCOUNT: Final = Budget(restarts=50, window=timedelta(hours=1))
DEFAULT_GLOBAL: Final = Budget(restarts=200, window=timedelta(hours=1))


@dataclass(frozen=True)
class Limits:
    """Budgets over sliding windows; ``None`` means that limit is off (``null`` in the file)."""

    per_job: Budget | None = DEFAULT_PER_JOB
    per_account: Budget | None = DEFAULT_PER_ACCOUNT
    global_: Budget | None = DEFAULT_GLOBAL
    per_host: HostLimit | None = HostLimit()
    count_manual: bool = False
    """Whether manual restarts count against the budgets (the caller does the counting)."""


@dataclass(frozen=True)
class CircuitBreaker:
    failure_ratio: float = 0.5
    min_restarts: int = 10
    window: timedelta = timedelta(minutes=15)
    cool_down: timedelta = timedelta(minutes=10)

    @property
    def lookback(self) -> timedelta:
        """How far back ``DecisionInput.restart_outcomes`` must reach."""
        return self.window + self.cool_down


@dataclass(frozen=True)
class SignatureBreaker:
    """``circuit_breaker.per_signature``: a signature seen failing in at least ``executions``
    executions of at least ``jobs`` different jobs inside ``window`` opens its breaker; it
    closes ``cool_down`` after that condition last held."""

    executions: int = 5
    jobs: int = 3
    window: timedelta = timedelta(minutes=10)
    cool_down: timedelta = timedelta(minutes=15)

    @property
    def lookback(self) -> timedelta:
        """How far back ``DecisionInput.signature_sightings`` must reach."""
        return self.window + self.cool_down


@dataclass(frozen=True)
class Blackout:
    """One ``schedule.blackouts`` window: on ``days`` (0 = Monday) from ``start`` to ``end``,
    local time in ``tz``. ``start > end`` spans midnight (the day is the one it starts on);
    ``end`` of ``None`` means midnight at the end of the day (``to: "24:00"``)."""

    name: str
    days: frozenset[int]
    start: time
    end: time | None
    tz: str
    zone: ZoneInfo = field(compare=False, repr=False)
    line: int = 0


@dataclass(frozen=True)
class Schedule:
    blackouts: tuple[Blackout, ...] = ()


@dataclass(frozen=True)
class ActiveBlackout:
    """The blackout covering a moment: its name and the first moment after it (windows that
    touch or overlap are followed to the end of the last)."""

    name: str
    ends_at: datetime


@dataclass(frozen=True)
class Policy:
    version_hash: str
    """Short sha256 of the policy text: recorded with every decision."""
    defaults: Settings = Settings()
    rules: tuple[Rule, ...] = ()
    limits: Limits = Limits()
    circuit_breaker: CircuitBreaker | None = CircuitBreaker()
    """``None`` when disabled (``circuit_breaker: null``)."""
    signature_breaker: SignatureBreaker | None = None
    """``circuit_breaker.per_signature``; off unless given."""
    schedule: Schedule = Schedule()
    notify: NotifyConfig = field(default_factory=NotifyConfig)
    schema_version: int = 1
    source: str = "policy.yaml"
    warnings: tuple[PolicyProblem, ...] = ()
    """Things that load but look like mistakes, such as a rule no failure can ever reach."""

    def rule(self, name: str) -> Rule | None:
        return next((r for r in self.rules if r.name == name), None)


# --- engine input -------------------------------------------------------------------------------


@dataclass(frozen=True)
class HostFailure:
    host: str
    failure_class: str = "unknown"
    """unreachable, task_failed, async_failed, init_failure or unknown (anything else: unknown)."""
    message: str = ""
    changed: int | None = None
    """Tasks that changed something on this host in the failed run; ``None`` when not known."""


@dataclass(frozen=True)
class BudgetUsage:
    """Restarts already counted inside each budget's window, as the caller counted them."""

    per_job: int = 0
    per_account: int = 0
    global_: int = 0


@dataclass(frozen=True)
class Signature:
    """A failure's error signature: the failure class plus the message with its variable parts
    (numbers, hex ids, UUIDs, IP addresses, host names, quoted paths) masked."""

    key: str
    """A short stable hash of ``failure_class`` and ``text``: what the breaker counts by."""
    failure_class: str
    text: str
    """The normalised message, as operators see it."""


@dataclass(frozen=True, order=True)
class Sighting:
    """One failed run with a given signature: when it failed, which execution, which job."""

    at: datetime
    execution_id: str
    job_id: str


@dataclass(frozen=True)
class SignatureState:
    open: bool
    until: datetime | None
    """When open: the earliest moment it can close (later if the condition keeps holding)."""
    executions: int
    jobs: int
    """Distinct executions and jobs inside the window when the condition last held (or now)."""


@dataclass(frozen=True, order=True)
class RestartOutcome:
    """A finished automatic restart: when it finished and whether the execution failed again."""

    at: datetime
    failed_again: bool


def _no_history() -> Mapping[str, tuple[datetime, ...]]:
    return MappingProxyType({})


@dataclass(frozen=True)
class DecisionInput:
    execution_id: str
    account: str
    job_id: str
    job_description: str | None
    status: str
    run_index: int
    """0-based index of the run that failed."""
    run_count: int
    first_failure_at: datetime
    now: datetime
    failed_hosts: tuple[HostFailure, ...] = ()
    prior_restarts: int = 0
    """Automatic restarts respawn already decided for this execution (not cancelled)."""
    usage: BudgetUsage = BudgetUsage()
    host_failure_times: Mapping[str, tuple[datetime, ...]] = field(default_factory=_no_history)
    """Recent failure times of each failed host over all executions, this failure included."""
    restart_outcomes: tuple[RestartOutcome, ...] = ()
    paused: str | None = None
    """Why automatic restarts are paused here (e.g. "job paused by alice"), or None."""
    run_host_count: int | None = None
    """Every host of the failed run (failed or not), when the run's stats told; else None."""
    signature: Signature | None = None
    """This failure's signature (``failure_signature`` of its failed hosts), or None."""
    signature_sightings: tuple[Sighting, ...] = ()
    """Failed runs with the same signature inside the breaker's lookback, this one included
    (none from before an operator last closed the breaker by hand)."""

    def __post_init__(self) -> None:
        for name in ("now", "first_failure_at"):
            value: datetime = getattr(self, name)
            if value.tzinfo is None or value.utcoffset() is None:
                raise ValueError(f"DecisionInput.{name} must be timezone-aware")
        if self.prior_restarts < 0:
            raise ValueError("DecisionInput.prior_restarts must not be negative")


# --- engine output ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExcludedHost:
    """A failed host the decision leaves out, with a reason code and a sentence."""

    host: str
    code: str
    """quarantine | unsafe_changed | not_matched"""
    reason: str


@dataclass(frozen=True)
class Decision:
    action: Verdict
    hosts: tuple[str, ...]
    """Hosts to restart; empty on a restart means POST ``{}`` (no host list)."""
    excluded_hosts: tuple[ExcludedHost, ...]
    due_at: datetime | None
    backoff_seconds: float | None
    rule: str
    """The matching rule's name, or ``"defaults"``."""
    reason_code: str
    reason: str
    policy_version: str
    attempt: int
    """The restart number this decision is (or would have been): ``prior_restarts + 1``."""
    deferred_by: str | None = None
    """The blackout that moved ``due_at`` to its end, or None."""
    signature: Signature | None = None
    """The failure's signature (set whether or not its breaker is on)."""
    held_until: datetime | None = None
    """For ``held``: the earliest moment the signature's breaker can close."""

    @property
    def restart(self) -> bool:
        return self.action == "restart"

    @property
    def held(self) -> bool:
        return self.action == "held"

    @property
    def queued(self) -> bool:
        """Whether the decision queues a restart (now due, or held)."""
        return self.action in ("restart", "held")


@dataclass(frozen=True)
class RuleTrace:
    rule: str
    matched: bool
    """The rule's conditions hold (a later rule can match too, but the first match decides)."""
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class Check:
    """One gate of the decision, in the order the engine applies them."""

    code: str
    passed: bool
    detail: str


@dataclass(frozen=True)
class Explanation:
    decision: Decision
    traces: tuple[RuleTrace, ...]
    checks: tuple[Check, ...]
    """Every gate, even after the first that failed (that one gives the decision's reason)."""


@dataclass(frozen=True)
class BreakerState:
    open: bool
    until: datetime | None
    """When open: the earliest moment it can close (later if restarts keep failing)."""
    failed: int
    total: int
    """Outcomes inside the window when the breaker condition last held (or ending now)."""
