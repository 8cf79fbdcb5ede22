"""The stored record: executions, their runs (timers), events, failures, decisions, restarts."""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Date,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.db import Base, JSONType, UTCDateTime, utcnow

ID = String(128)


class RestartState(StrEnum):
    """Where a restart (an outbox row) is in its life; `app.core.outbox` moves it on.

    pending → in_flight → done | failed | not_needed | pending (retry later);
    pending → cancelled | not_needed; an in_flight row whose lease expired is claimed again;
    held (its error signature's breaker is open) → pending | cancelled | not_needed, and a
    pending row joins `held` when its signature's breaker opens.
    """

    PENDING = "pending"
    HELD = "held"
    IN_FLIGHT = "in_flight"
    DONE = "done"
    FAILED = "failed"
    NOT_NEEDED = "not_needed"
    CANCELLED = "cancelled"


ACTIVE_RESTART_STATES = (RestartState.PENDING, RestartState.HELD, RestartState.IN_FLIGHT)
"""A restart under way: at most one per execution at a time."""
BUDGET_RESTART_STATES = (RestartState.PENDING, RestartState.IN_FLIGHT, RestartState.DONE)
"""What budgets count: restarts queued, being sent or sent (not failed, cancelled, unneeded)."""


class Execution(Base):
    """One Runner execution as respawn knows it; the current run's state."""

    __tablename__ = "executions"
    __table_args__ = (
        Index("ix_executions_last_seen", "last_seen_at", "id"),
        # The list filtered by status, newest activity first, without a sort.
        Index("ix_executions_status_seen", "status", "last_seen_at", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    execution_id: Mapped[str] = mapped_column(ID, unique=True)
    account_alias: Mapped[str] = mapped_column(ID, default="", index=True)
    job_id: Mapped[str] = mapped_column(ID, default="", index=True)
    status: Mapped[str] = mapped_column(String(32), index=True)
    # Position of the current state: run (0-based) and the status's rank within it.
    run_index: Mapped[int] = mapped_column(Integer, default=0)
    status_rank: Mapped[int] = mapped_column(Integer, default=0)
    run_count: Mapped[int] = mapped_column(Integer, default=1)
    failed_hosts: Mapped[list[str]] = mapped_column(JSONType, default=list)
    repository_log: Mapped[Any | None] = mapped_column(JSONType, nullable=True)
    is_vpn_established: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    first_seen_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_event_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    first_failure_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    restart_count: Mapped[int] = mapped_column(Integer, default=0)

    runs: Mapped[list[ExecutionRun]] = relationship(
        back_populates="execution", order_by="ExecutionRun.run_index", lazy="raise"
    )


class ExecutionRun(Base):
    """One timer: a run of the execution (the first, then one per restart)."""

    __tablename__ = "execution_runs"
    __table_args__ = (UniqueConstraint("execution_pk", "run_index"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    execution_pk: Mapped[int] = mapped_column(ForeignKey("executions.id", ondelete="CASCADE"))
    run_index: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(32))
    start_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    end_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    ended_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # True while the time comes from status events only, not from an execution document.
    start_derived: Mapped[bool] = mapped_column(Boolean, default=False)
    end_derived: Mapped[bool] = mapped_column(Boolean, default=False)
    # Every host of the run, failed or not, from its closing stats; None until they come.
    host_count: Mapped[int | None] = mapped_column(Integer, nullable=True)

    execution: Mapped[Execution] = relationship(back_populates="runs", lazy="raise")


class Event(Base):
    """One stored delivery: a status event or an execution document (secrets redacted).

    Also the inbox: the receiver stores a delivery `pending` (its execution and run not yet
    known) and answers; the intake applies pending deliveries to their executions, in order
    of `id` per execution, and clears `pending` in the same transaction (docs/architecture.md).
    """

    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_execution", "execution_pk", "id"),
        # The inbox: pending deliveries by execution, oldest first (a small partial index).
        Index(
            "ix_events_pending",
            "execution_id",
            "id",
            postgresql_where=text("pending"),
            sqlite_where=text("pending"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    execution_id: Mapped[str] = mapped_column(ID)
    execution_pk: Mapped[int | None] = mapped_column(
        ForeignKey("executions.id", ondelete="CASCADE"), nullable=True
    )
    run_index: Mapped[int | None] = mapped_column(Integer, nullable=True)
    pending: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # Failed tries at applying a pending delivery (an error in processing, not in storage).
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    delivery_key: Mapped[str] = mapped_column(String(64), unique=True)
    # Set when the sender named the delivery (a `webhook-id` header).
    webhook_key: Mapped[str | None] = mapped_column(String(64), unique=True, nullable=True)
    kind: Mapped[str] = mapped_column(String(16))  # "event" | "document"
    event_type: Mapped[str | None] = mapped_column(String(64), nullable=True)
    event_id: Mapped[str | None] = mapped_column(ID, nullable=True)
    host: Mapped[str | None] = mapped_column(String(255), nullable=True)
    status: Mapped[str | None] = mapped_column(String(32), nullable=True)
    event_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    event_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    received_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    payload: Mapped[Any] = mapped_column(JSONType)


class HostFailure(Base):
    """A host that failed in one run, with what Ansible said about it."""

    __tablename__ = "host_failures"
    __table_args__ = (
        UniqueConstraint("execution_pk", "run_index", "host"),
        Index("ix_host_failures_host_time", "host", "occurred_at"),
        Index("ix_host_failures_time", "occurred_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    execution_pk: Mapped[int] = mapped_column(ForeignKey("executions.id", ondelete="CASCADE"))
    run_index: Mapped[int] = mapped_column(Integer)
    host: Mapped[str] = mapped_column(String(255))
    failure_class: Mapped[str] = mapped_column(String(16))
    message: Mapped[str | None] = mapped_column(Text, nullable=True)
    stderr_tail: Mapped[str | None] = mapped_column(Text, nullable=True)
    rc: Mapped[int | None] = mapped_column(Integer, nullable=True)
    changed: Mapped[int | None] = mapped_column(Integer, nullable=True)
    occurred_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class Job(Base):
    """What respawn knows of a Runner job (its description is fetched and cached)."""

    __tablename__ = "jobs"

    job_id: Mapped[str] = mapped_column(ID, primary_key=True)
    account_alias: Mapped[str] = mapped_column(ID, default="")
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    fetched_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    fetch_error: Mapped[str | None] = mapped_column(String(255), nullable=True)


class Decision(Base):
    """What the policy (or an operator) decided for a failed run, and why."""

    __tablename__ = "decisions"
    __table_args__ = (
        Index("ix_decisions_execution", "execution_pk", "id"),
        # The signature breaker counts a signature's recent failures; the Insights page reads
        # a signature's latest decisions (newest first, ties by id) from the same index.
        Index("ix_decisions_signature", "signature", "created_at", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    execution_pk: Mapped[int] = mapped_column(ForeignKey("executions.id", ondelete="CASCADE"))
    run_index: Mapped[int] = mapped_column(Integer)
    # "auto:<execution pk>:<run>" for the policy, so one run is never decided twice.
    decision_key: Mapped[str] = mapped_column(String(96), unique=True)
    # "policy" | "manual" | "release" (a held restart let go, or dropped, once its signature
    # closed: "release:<restart id>")
    origin: Mapped[str] = mapped_column(String(16))
    action: Mapped[str] = mapped_column(String(16))  # "restart" | "skip" | "held"
    hosts: Mapped[list[str]] = mapped_column(JSONType, default=list)
    excluded_hosts: Mapped[list[dict[str, str]]] = mapped_column(JSONType, default=list)
    due_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    backoff_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    rule: Mapped[str] = mapped_column(String(128))
    reason_code: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(Text)
    policy_version: Mapped[str] = mapped_column(String(64))
    actor: Mapped[str | None] = mapped_column(String(128), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    # The failure's error signature (`signatures.key`); the blackout that deferred it.
    signature: Mapped[str | None] = mapped_column(String(16), nullable=True)
    deferred_by: Mapped[str | None] = mapped_column(String(100), nullable=True)
    held_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)


class FailureSignature(Base):
    """An error signature seen in a decision: its normalised text, and a hand close."""

    __tablename__ = "signatures"

    key: Mapped[str] = mapped_column(String(16), primary_key=True)
    failure_class: Mapped[str] = mapped_column(String(32))
    text: Mapped[str] = mapped_column(Text)
    first_seen_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Sightings up to this moment no longer count (an operator closed the breaker by hand).
    closed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    closed_by: Mapped[str | None] = mapped_column(String(128), nullable=True)


class Restart(Base):
    """The outbox: one restart call to make for a decision, claimed under a lease."""

    __tablename__ = "restarts"
    __table_args__ = (
        Index("ix_restarts_state_due", "state", "due_at"),
        # Budgets count restarts by time; the breaker reads finished ones by result time.
        Index("ix_restarts_created", "created_at"),
        Index("ix_restarts_result_at", "result_at"),
        Index("ix_restarts_held", "hold_signature", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    decision_id: Mapped[int] = mapped_column(ForeignKey("decisions.id"), unique=True)
    execution_pk: Mapped[int] = mapped_column(
        ForeignKey("executions.id", ondelete="CASCADE"), index=True
    )
    run_index: Mapped[int] = mapped_column(Integer)
    manual: Mapped[bool] = mapped_column(Boolean, default=False)
    counts_against_budget: Mapped[bool] = mapped_column(Boolean, default=True)
    # A RestartState; changed only through app.core.outbox.
    state: Mapped[str] = mapped_column(String(16), default=RestartState.PENDING.value)
    hosts: Mapped[list[str]] = mapped_column(JSONType, default=list)
    due_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_owner: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lease_expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    timers_before: Mapped[int] = mapped_column(Integer, default=0)
    outcome: Mapped[str | None] = mapped_column(String(32), nullable=True)
    outcome_detail: Mapped[str | None] = mapped_column(Text, nullable=True)
    # How the run this restart started ended: "succeeded" | "failed_again".
    result: Mapped[str | None] = mapped_column(String(16), nullable=True)
    result_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    sent_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True, index=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    completed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    cancelled_by: Mapped[str | None] = mapped_column(String(128), nullable=True)
    # While held: the signature whose breaker holds it.
    hold_signature: Mapped[str | None] = mapped_column(String(16), nullable=True)


class RestartAttempt(Base):
    """One try at the restart call: when, by whom, what the Runner answered."""

    __tablename__ = "restart_attempts"
    __table_args__ = (Index("ix_restart_attempts_restart", "restart_id", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    restart_id: Mapped[int] = mapped_column(ForeignKey("restarts.id", ondelete="CASCADE"))
    worker: Mapped[str] = mapped_column(String(64))
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    outcome: Mapped[str] = mapped_column(String(32), default="started")
    detail: Mapped[str | None] = mapped_column(Text, nullable=True)


class Pause(Base):
    """Automatic restarts paused globally (job_id "") or for one job."""

    __tablename__ = "pauses"

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[str] = mapped_column(ID, unique=True)  # "" = every job
    paused_by: Mapped[str] = mapped_column(String(128))
    reason: Mapped[str | None] = mapped_column(String(255), nullable=True)
    paused_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16))  # "viewer" | "operator"
    # Part of every session's identity: raising it ends all of the user's sessions at once
    # (sign-out, a new password, `respawn user disable`).
    session_generation: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    disabled: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class LoginFailure(Base):
    """A failed sign-in, counted per client address and per (user name, address) pair over a
    sliding window; in the database, so the throttle holds across workers and nodes."""

    __tablename__ = "login_failures"
    __table_args__ = (Index("ix_login_failures_key_at", "key", "failed_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(400))
    failed_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class AuditEntry(Base):
    """An operator's action: who did what to which target."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(32))
    target: Mapped[str] = mapped_column(String(255))
    detail: Mapped[Any | None] = mapped_column(JSONType, nullable=True)


class NotificationState(StrEnum):
    """pending → sending → sent | pending (retry) | failed; folded: joined a digest, never
    sent itself; muted: its route was muted when it was made."""

    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    FOLDED = "folded"
    MUTED = "muted"


class Notification(Base):
    """The notifications outbox: one message for one channel, written with its cause."""

    __tablename__ = "notifications"
    __table_args__ = (
        Index("ix_notifications_due", "state", "due_at"),
        Index("ix_notifications_fold", "kind", "job_id", "channel", "created_at"),
        Index("ix_notifications_execution", "execution_pk", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    # The `webhook-id`: stable for one event on one channel, so a receiver can de-duplicate.
    key: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(32))
    channel: Mapped[str] = mapped_column(String(64))
    route: Mapped[str] = mapped_column(String(100))
    execution_pk: Mapped[int | None] = mapped_column(
        ForeignKey("executions.id", ondelete="SET NULL"), nullable=True
    )
    job_id: Mapped[str] = mapped_column(ID, default="")
    account: Mapped[str] = mapped_column(ID, default="")
    summary: Mapped[str] = mapped_column(Text)
    payload: Mapped[Any] = mapped_column(JSONType)
    state: Mapped[str] = mapped_column(String(16), default=NotificationState.PENDING.value)
    digest: Mapped[bool] = mapped_column(Boolean, default=False)
    folded: Mapped[int] = mapped_column(Integer, default=0)
    """For a digest: how many events it gathers."""
    digest_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    """For a folded event: the digest that carries it."""
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    due_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    lease_owner: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lease_expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    answer: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)


class WatchState(Base):
    """The last state notified of something respawn watches (a breaker, a host's quarantine),
    so each change is told once."""

    __tablename__ = "watch_states"

    key: Mapped[str] = mapped_column(String(300), primary_key=True)
    value: Mapped[str] = mapped_column(String(300))
    changed_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class RouteMute(Base):
    """A notification route an operator muted until a moment."""

    __tablename__ = "route_mutes"

    route: Mapped[str] = mapped_column(String(100), primary_key=True)
    until: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    muted_by: Mapped[str] = mapped_column(String(128))
    muted_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class InsightCount(Base):
    """Restart insights, kept as counters (`app.core.insights`): per error signature, one row
    per scope (`all`, `attempt`, `wait`, `job`, `host`), item within it and day of the failure.

    Updated in the transactions that record a failure's decision, a restart's sending and the
    end of the run it started; `respawn insights rebuild` recomputes them from the record.
    """

    __tablename__ = "insight_counts"
    __table_args__ = (
        # The Insights page ranks signatures by their `all` rows within a span of days.
        Index("ix_insight_counts_scope_day", "scope", "day", "signature"),
        # A signature's top jobs and hosts, read backwards (most restarts, then failures,
        # then item last to first) up to the few the page shows.
        Index("ix_insight_counts_top", "signature", "scope", "day", "restarts", "failures", "item"),
    )

    signature: Mapped[str] = mapped_column(String(16), primary_key=True)
    scope: Mapped[str] = mapped_column(String(8), primary_key=True)
    item: Mapped[str] = mapped_column(String(255), primary_key=True)
    day: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    """Failed runs with this signature that the policy decided."""
    restarts: Mapped[int] = mapped_column(Integer, default=0)
    """Automatic restarts sent (the Runner accepted them)."""
    hosts: Mapped[int] = mapped_column(Integer, default=0)
    """Hosts those restarts named (a restart without a host list counts as one)."""
    settled: Mapped[int] = mapped_column(Integer, default=0)
    """Restarts whose run has ended."""
    recovered: Mapped[int] = mapped_column(Integer, default=0)
    """Restarts whose run ended with none of the hosts they named failing."""
    host_succeeded: Mapped[int] = mapped_column(Integer, default=0)
    host_failed_same: Mapped[int] = mapped_column(Integer, default=0)
    host_failed_other: Mapped[int] = mapped_column(Integer, default=0)
    recovery_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    """Sum over recovered restarts of the time from the execution's first failure."""
