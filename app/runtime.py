"""What one respawn process runs on: its settings, database, policy and background wake-up.

Built once per process by `create_app` (web) or the CLI, and handed to the dispatcher and
reconciler threads; nothing here knows about Flask. `app.extensions` attaches it to the Flask
app and gives typed access to it in requests.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from app import metrics
from app.config import Settings
from app.core.claims import ClaimedRestart
from app.core.notifications import Notice, notify
from app.core.policy_source import LoadedPolicy, PolicyLoadError, PolicySource
from app.db import make_engine, make_sessionmaker, read_only, transaction, utcnow
from app.intake.intake import Intake
from app.intake.spool import Spool

log = logging.getLogger(__name__)


class Runtime:
    """The process's shared parts. Thread-safe: requests and background threads share it."""

    def __init__(self, settings: Settings, engine: Engine, policy: PolicySource) -> None:
        self.settings = settings
        self.engine = engine
        self.sessions: sessionmaker[Session] = make_sessionmaker(engine)
        self.policy = policy
        self._lock = threading.Lock()
        self._wake: Callable[[bool], None] | None = None
        self._stop: Callable[[], None] | None = None
        self._claim_for: Callable[[], tuple[str, float] | None] | None = None
        self._hand: Callable[[list[ClaimedRestart]], None] | None = None
        self._intake: Intake | None = None
        self._intake_engine: Engine | None = None
        self._told_refusal: PolicyLoadError | None = None
        self.notes: dict[str, str] = {}
        """What the background found out about the Runner or itself that an operator should
        know (shown on /readyz): an unsupported path, a reconciler page cap reached."""

    @classmethod
    def from_settings(cls, settings: Settings) -> Runtime:
        """Open the database engine and load the policy file (PolicyError if it is invalid)."""
        policy = PolicySource(settings.policy_file, check_interval=settings.policy_check_interval)
        return cls(settings, make_engine(settings.database_url), policy)

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """One unit of work for background jobs and commands, committed on success."""
        with transaction(self.sessions) as session:
            yield session

    @contextmanager
    def reading(self) -> Iterator[Session]:
        """A read-only unit of work: on SQLite it does not wait for the write lock."""
        with self.sessions() as session:
            read_only(session)
            yield session

    def current_policy(self) -> LoadedPolicy:
        """The policy in force (the file is looked at again every few seconds)."""
        loaded = self.policy.current()
        metrics.POLICY_STALE.set(1 if self.policy.is_stale else 0)
        return loaded

    def tell_policy_refusal(self) -> None:
        """Notify a refused policy edit once (every process sees it; the notification's key
        makes it one message). The notifier calls this, outside any transaction."""
        loaded = self.current_policy()
        refused = self.policy.last_error
        if refused is None or refused is self._told_refusal:
            return
        self._told_refusal = refused
        digest = hashlib.sha256("\n".join(refused.messages).encode()).hexdigest()[:16]
        shown = "; ".join(refused.messages[:3])
        try:
            with self.transaction() as session:
                notify(
                    session,
                    loaded.policy,
                    Notice(
                        "policy_refused",
                        f"policy_refused:{refused.version or 'unreadable'}:{digest}",
                        f"a policy edit was refused; policy {loaded.version} stays in force: "
                        f"{shown}"[:500],
                        details={
                            "problems": list(refused.messages[:20]),
                            "refused_version": refused.version,
                            "in_force": loaded.version,
                        },
                    ),
                    utcnow(),
                )
        except SQLAlchemyError:
            self._told_refusal = None  # the database is away: tell it on a later look
            log.warning("could not queue the notification of a refused policy edit")

    # --- the intake (what the receiver hands callbacks to) ----------------------------------

    @property
    def intake(self) -> Intake:
        """This process's intake; its threads start with the first callback."""
        if self._intake is None:
            with self._lock:
                if self._intake is None:
                    settings = self.settings
                    # Its own connections, that give up on a busy or absent database quickly:
                    # a callback is spooled rather than kept waiting.
                    self._intake_engine = make_engine(
                        settings.database_url,
                        lock_timeout=settings.intake_timeout,
                        pool_size=2,
                        max_overflow=2,
                    )
                    self._intake = Intake(
                        writer_sessions=make_sessionmaker(self._intake_engine),
                        sessions=self.sessions,
                        spool=Spool(settings.spool_dir),
                        policy=lambda: self.current_policy().policy,
                        defer_unknown_jobs=settings.runner_configured,
                        on_queued=self.wake_background,
                        claim_for=self.claim_for,
                        hand=self.hand_claims,
                        single_writer=self._intake_engine.dialect.name == "sqlite",
                    )
        return self._intake

    def note(self, key: str, text: str) -> None:
        self.notes[key] = text

    # --- the background (dispatcher, reconciler) -------------------------------------------

    def attach_background(
        self,
        wake: Callable[[bool], None],
        stop: Callable[[], None],
        claim_for: Callable[[], tuple[str, float] | None] | None = None,
        hand: Callable[[list[ClaimedRestart]], None] | None = None,
    ) -> None:
        """Called by the background once its threads run in this process. With `claim_for`
        and `hand`, its dispatchers take restarts claimed where they were queued."""
        with self._lock:
            self._wake, self._stop = wake, stop
            self._claim_for, self._hand = claim_for, hand

    def claim_for(self) -> tuple[str, float] | None:
        """The lease under which to claim restarts as they are queued (a dispatcher of this
        process waits for work), or None."""
        claim_for = self._claim_for
        return claim_for() if claim_for is not None else None

    def hand_claims(self, claims: list[ClaimedRestart]) -> None:
        """Give this process's dispatchers the restarts claimed as they were queued."""
        hand = self._hand
        if hand is not None:
            hand(claims)

    @property
    def has_background(self) -> bool:
        return self._wake is not None

    def wake_background(self, fetch_jobs: bool = True) -> None:
        """After a commit that queued work: have this process's dispatcher look now, and
        with `fetch_jobs` its job refresh too (failures wait for a job record)."""
        wake = self._wake
        if wake is not None:
            wake(fetch_jobs)

    def close(self) -> None:
        """Finish the intake's work, stop the background threads, close the connections."""
        with self._lock:
            stop, self._wake, self._stop = self._stop, None, None
            self._claim_for = self._hand = None
            intake, self._intake = self._intake, None
        if intake is not None:
            intake.close()
        if stop is not None:
            stop()
        if self._intake_engine is not None:
            self._intake_engine.dispose()
        self.engine.dispose()
