"""The policy in force: loaded from the policy file at start and re-read when the file changes.

The only part of the policy that does I/O. ``current()`` is cheap: it looks at the file (one
``stat``) at most every ``check_interval`` seconds, and re-reads and re-parses it only when its
modification time, size or inode changed and its content hash differs from what was seen last.
An invalid edit is refused (``last_error``) and the last good policy stays in force
(``is_stale``); an invalid file at start raises ``PolicyError`` so the service refuses to start.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from app import metrics
from app.policy import (
    BUILTIN_SOURCE,
    DEFAULT_POLICY_TEXT,
    Policy,
    PolicyError,
    PolicyProblem,
    parse_policy,
)


@dataclass(frozen=True)
class LoadedPolicy:
    policy: Policy
    version: str
    """Short sha256 of the policy text (``policy.version_hash``)."""
    source: str
    """The file's path, or ``"builtin"`` for the built-in default policy."""
    loaded_at: datetime


@dataclass(frozen=True)
class PolicyLoadError:
    """A refused edit of the policy file."""

    messages: tuple[str, ...]
    """Every problem, each as ``file:line: message``."""
    at: datetime
    version: str | None
    """Short sha256 of the refused content, when it could be read."""


_Signature = tuple[int, int, int, int] | None
"""(mtime_ns, size, inode, device) of the file, None when it does not exist."""


def _utcnow() -> datetime:
    return datetime.now(UTC)


class PolicySource:
    """Thread-safe holder of the policy in force, following the policy file."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        check_interval: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.path = Path(path)
        self.check_interval = check_interval
        self._clock = clock
        self._wall_clock = wall_clock
        self._lock = threading.Lock()
        self._last_error: PolicyLoadError | None = None
        self._last_check = clock()
        self._signature: _Signature = None
        self._good_hash: str | None = None
        """sha256 of the file content the policy in force came from."""
        self._seen_hash: str | None = None
        """sha256 of the file content read last (the policy in force, or a refused edit)."""
        try:
            signature = self._stat()
            content = None if signature is None else self._read()
        except OSError as exc:
            problem = self._problem(f"cannot read the policy file: {exc.strerror or exc}")
            raise PolicyError([problem]) from exc
        if content is None:
            self._loaded = self._builtin()
            return
        self._loaded = self._parse(content)  # an invalid file at start raises PolicyError
        self._signature = signature
        self._good_hash = self._seen_hash = _digest(content)

    # --- reading ----------------------------------------------------------------------------

    def current(self) -> LoadedPolicy:
        """The policy in force, after looking at the file if ``check_interval`` has passed."""
        due = self._clock() - self._last_check >= self.check_interval
        # One thread looks at the file; the others go on with the policy they have.
        if due and self._lock.acquire(blocking=False):
            try:
                if self._clock() - self._last_check >= self.check_interval:
                    self._check(force=False)
            finally:
                self._lock.release()
        return self._loaded

    def reload(self) -> LoadedPolicy:
        """Look at the file now, re-reading it even if its stat did not change."""
        with self._lock:
            self._check(force=True)
        return self._loaded

    @property
    def last_error(self) -> PolicyLoadError | None:
        """The edit that was refused, while the file on disk is still that edit."""
        return self._last_error

    @property
    def is_stale(self) -> bool:
        """True when the file on disk was refused and the last good policy stays in force."""
        return self._last_error is not None

    # --- internals --------------------------------------------------------------------------

    def _check(self, *, force: bool) -> None:
        self._last_check = self._clock()
        try:
            signature = self._stat()
        except OSError as exc:
            self._refuse(
                (self._problem(f"cannot read the policy file: {exc.strerror or exc}"),), None
            )
            return
        if signature == self._signature and not force:
            return
        if signature is None:
            self._signature = None
            self._seen_hash = None
            if self._loaded.source == BUILTIN_SOURCE:
                self._last_error = None
            else:
                # Falling back to the built-in policy could restart what the file skipped.
                problem = self._problem(
                    "the policy file is gone; the last policy loaded from it stays in force"
                )
                self._refuse((problem,), None)
            return
        try:
            content = self._read()
        except OSError as exc:
            self._refuse(
                (self._problem(f"cannot read the policy file: {exc.strerror or exc}"),), None
            )
            return
        self._signature = signature
        content_hash = _digest(content)
        if content_hash == self._seen_hash:
            return  # the content did not change: still the policy in force, or the refused edit
        self._seen_hash = content_hash
        if content_hash == self._good_hash:
            self._last_error = None  # back to the content of the policy in force
            return
        try:
            loaded = self._parse(content)
        except PolicyError as exc:
            self._refuse(tuple(exc.problems), content_hash[:12])
            return
        self._loaded = loaded
        self._good_hash = content_hash
        self._last_error = None
        metrics.POLICY_RELOADS.labels(outcome="loaded").inc()

    def _refuse(self, problems: tuple[PolicyProblem, ...], version: str | None) -> None:
        texts = tuple(str(p) for p in problems)
        if self._last_error is not None and self._last_error.messages == texts:
            return  # the same refusal again: keep when it was first seen
        self._last_error = PolicyLoadError(
            messages=texts,
            at=self._wall_clock(),
            version=version,
        )
        metrics.POLICY_RELOADS.labels(outcome="refused").inc()

    def _problem(self, message: str) -> PolicyProblem:
        return PolicyProblem(str(self.path), 1, message)

    def _stat(self) -> _Signature:
        try:
            info = os.stat(self.path)
        except FileNotFoundError:
            return None
        return (info.st_mtime_ns, info.st_size, info.st_ino, info.st_dev)

    def _read(self) -> bytes:
        return self.path.read_bytes()

    def _parse(self, content: bytes) -> LoadedPolicy:
        policy = parse_policy_bytes(content, str(self.path))
        return LoadedPolicy(
            policy=policy,
            version=policy.version_hash,
            source=str(self.path),
            loaded_at=self._wall_clock(),
        )

    def _builtin(self) -> LoadedPolicy:
        policy = parse_policy(DEFAULT_POLICY_TEXT, BUILTIN_SOURCE)
        return LoadedPolicy(
            policy=policy,
            version=policy.version_hash,
            source=BUILTIN_SOURCE,
            loaded_at=self._wall_clock(),
        )


def _digest(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def parse_policy_bytes(content: bytes, source: str) -> Policy:
    """A policy file's bytes parsed; PolicyError lists every problem (UTF-8 text required)."""
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = content.count(b"\n", 0, exc.start) + 1
        problem = PolicyProblem(source, line, "not UTF-8 text: the policy file must be UTF-8")
        raise PolicyError([problem]) from None
    return parse_policy(text, source)


def load_policy_file(file: str | os.PathLike[str], missing: str = "no such file") -> Policy:
    """Parse a policy file as the service would load it; PolicyError lists every problem."""
    source = str(file)
    try:
        content = Path(file).read_bytes()
    except FileNotFoundError:
        raise PolicyError([PolicyProblem(source, 1, missing)]) from None
    except OSError as exc:
        problem = PolicyProblem(source, 1, f"cannot read the file: {exc.strerror or exc}")
        raise PolicyError([problem]) from None
    return parse_policy_bytes(content, source)
