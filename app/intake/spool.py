"""The spool: where callbacks go when the database cannot take them, until it can.

Each process appends to a file of its own in the spool folder, one JSON line per delivery,
and fsyncs before the callback is answered. It holds an exclusive lock on that file while it
lives; a file nobody holds belongs to a process that is gone, and any process takes it over.
Once the database answers again, the records are inserted in the order they were written
(duplicates of stored deliveries are ignored by their keys) and the file is removed.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import logging
import os
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from app.core.deliveries import Delivery, parse_item
from app.runner.documents import DocumentError

log = logging.getLogger(__name__)

SUFFIX = ".jsonl"


@dataclass(frozen=True)
class Spooled:
    """A delivery read back from the spool, with when it was first received."""

    delivery: Delivery
    received_at: dt.datetime


def encode(delivery: Delivery, received_at: dt.datetime) -> bytes:
    record = {
        "k": delivery.delivery_key,
        "w": delivery.webhook_key,
        "at": received_at.isoformat(),
        "p": delivery.payload,
    }
    return json.dumps(record, separators=(",", ":")).encode() + b"\n"


def decode(line: bytes) -> Spooled | None:
    """A record, or None for a torn last line (the process died before answering it)."""
    try:
        record = json.loads(line)
        item = parse_item(record["p"])
        delivery = Delivery(item, record["p"], record["k"], record["w"])
        return Spooled(delivery, dt.datetime.fromisoformat(record["at"]))
    except (ValueError, KeyError, TypeError, DocumentError):
        return None


class Spool:
    """This process's spool file, and the takeover of files left by others."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self._file: IO[bytes] | None = None
        self._path: Path | None = None
        self._keys: set[str] = set()
        self.records = 0
        """Records in this process's own file, not yet replayed."""

    # --- writing ----------------------------------------------------------------------------

    def append(self, deliveries: list[Delivery], received_at: dt.datetime) -> list[bool]:
        """Write the deliveries not spooled before and fsync; which ones were new."""
        handle = self._open()
        new: list[bool] = []
        chunk = bytearray()
        for delivery in deliveries:
            keys = {delivery.delivery_key, delivery.webhook_key or delivery.delivery_key}
            if keys & self._keys:
                new.append(False)
                continue
            self._keys |= keys
            chunk += encode(delivery, received_at)
            new.append(True)
        if chunk:
            try:
                handle.write(chunk)
                handle.flush()
                os.fsync(handle.fileno())
            except OSError:
                # A torn write: let the file go (it becomes an orphan, replayed up to its last
                # whole record) and start a new one for the next batch.
                self._abandon()
                raise
            self.records += sum(new)
        return new

    def _abandon(self) -> None:
        if self._file is not None:
            _unlock_and_close(self._file)
        self._file, self._path = None, None
        self._keys.clear()
        self.records = 0

    def _open(self) -> IO[bytes]:
        if self._file is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            name = f"spool-{socket.gethostname()[:32]}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            self._path = self.folder / (name + SUFFIX)
            handle = self._path.open("ab")
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            _fsync_folder(self.folder)
            self._file = handle
        return self._file

    @property
    def has_records(self) -> bool:
        return self.records > 0

    # --- replaying --------------------------------------------------------------------------

    def own_records(self) -> list[Spooled]:
        """Everything in this process's file, in the order it was written."""
        if self._path is None:
            return []
        return list(_read(self._path))

    def replayed(self) -> None:
        """The own file's records are in the database: start afresh."""
        if self._file is not None and self._path is not None:
            self._path.unlink(missing_ok=True)
            _unlock_and_close(self._file)
        self._file, self._path = None, None
        self._keys.clear()
        self.records = 0

    @contextlib.contextmanager
    def orphans(self) -> Iterator[list[tuple[Path, list[Spooled]]]]:
        """Files no live process holds (their writers died), locked for this process while
        the block runs; the caller replays them and `remove`s each one it stored."""
        held: list[tuple[IO[bytes], Path, list[Spooled]]] = []
        try:
            for path in sorted(self.folder.glob(f"spool-*{SUFFIX}")):
                if path == self._path:
                    continue
                try:
                    handle: IO[bytes] = path.open("rb")
                except FileNotFoundError:
                    continue
                try:
                    fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    handle.close()  # its writer is alive
                    continue
                if not path.exists():  # replayed and removed by someone else meanwhile
                    _unlock_and_close(handle)
                    continue
                held.append((handle, path, list(_read(path))))
            yield [(path, records) for _, path, records in held]
        finally:
            for handle, _, _ in held:
                _unlock_and_close(handle)

    def depth(self) -> int:
        """Records in every spool file of the folder (this process's and orphans)."""
        total = 0
        for path in self.folder.glob(f"spool-*{SUFFIX}"):
            with contextlib.suppress(FileNotFoundError), path.open("rb") as handle:
                total += sum(1 for line in handle if line.endswith(b"\n"))
        return total

    def close(self) -> None:
        if self._file is not None:
            _unlock_and_close(self._file)
            self._file = None


def _read(path: Path) -> Iterator[Spooled]:
    with path.open("rb") as handle:
        for line in handle:
            record = decode(line) if line.endswith(b"\n") else None
            if record is not None:
                yield record
            elif line.strip():
                log.warning("spool %s: skipped an unreadable record", path.name)


def _unlock_and_close(handle: IO[Any]) -> None:
    with contextlib.suppress(OSError):
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    handle.close()


def _fsync_folder(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
