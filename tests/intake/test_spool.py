"""The spool: appended and fsynced in order, deduplicated, torn lines skipped, orphans taken."""

from __future__ import annotations

import datetime as dt
import fcntl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from app.core.deliveries import parse_deliveries
from app.intake.spool import Spool
from tests.feed import event

AT = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)


@pytest.fixture
def spools() -> Iterator[Callable[[Path], Spool]]:
    made: list[Spool] = []

    def make(folder: Path) -> Spool:
        made.append(Spool(folder))
        return made[-1]

    yield make
    for spool in made:
        spool.close()


def deliveries(*ids: str) -> list:  # type: ignore[type-arg]
    return parse_deliveries([event("runner_on_ok", 1000 + n, "web1", event_id=i)
                             for n, i in enumerate(ids)], None, 500)  # fmt: skip


def test_records_come_back_in_order_with_their_arrival_time(
    tmp_path: Path, spools: Callable[[Path], Spool]
) -> None:
    spool = spools(tmp_path)
    assert spool.append(deliveries("a", "b"), AT) == [True, True]
    assert spool.append(deliveries("c"), AT + dt.timedelta(seconds=1)) == [True]

    records = spool.own_records()

    assert [r.delivery.item.event_id for r in records] == ["a", "b", "c"]  # type: ignore[union-attr]
    assert [r.received_at for r in records] == [AT, AT, AT + dt.timedelta(seconds=1)]
    assert spool.records == 3 and spool.depth() == 3


def test_a_delivery_spooled_twice_is_a_duplicate(
    tmp_path: Path, spools: Callable[[Path], Spool]
) -> None:
    spool = spools(tmp_path)
    spool.append(deliveries("a"), AT)

    assert spool.append(deliveries("a", "b"), AT) == [False, True]
    assert spool.depth() == 2


def test_replayed_removes_the_file_and_starts_afresh(
    tmp_path: Path, spools: Callable[[Path], Spool]
) -> None:
    spool = spools(tmp_path)
    spool.append(deliveries("a"), AT)

    spool.replayed()

    assert list(tmp_path.glob("spool-*")) == [] and not spool.has_records
    assert spool.append(deliveries("a"), AT) == [True]  # forgotten: the database has it now


def test_a_torn_last_line_is_skipped(tmp_path: Path, spools: Callable[[Path], Spool]) -> None:
    spool = spools(tmp_path)
    spool.append(deliveries("a"), AT)
    (path,) = tmp_path.glob("spool-*")
    with path.open("ab") as handle:
        handle.write(b'{"k": "torn')  # the process died mid-write, before answering

    assert [r.delivery.item.event_id for r in spool.own_records()] == ["a"]  # type: ignore[union-attr]


def test_orphans_are_files_no_live_process_holds(
    tmp_path: Path, spools: Callable[[Path], Spool]
) -> None:
    held = spools(tmp_path)
    held.append(deliveries("live"), AT)  # this process's own: never an orphan
    orphan = tmp_path / "spool-gone-1-x.jsonl"
    orphan.write_bytes(b"")
    dead = spools(tmp_path / "dead")
    dead.append(deliveries("dead1", "dead2"), AT)
    (dead_file,) = (tmp_path / "dead").glob("spool-*")
    dead.close()  # its lock goes with it, as when a process dies
    dead_file.rename(orphan)
    # A live writer in another process holds its file: not an orphan.
    alive = tmp_path / "spool-alive-2-y.jsonl"
    alive.write_bytes(b"")
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import fcntl,sys,time; f=open(sys.argv[1],'ab'); fcntl.flock(f, fcntl.LOCK_EX);"
         " print('locked', flush=True); time.sleep(30)", str(alive)],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == b"locked"
        taker = spools(tmp_path)
        with taker.orphans() as files:
            found = {path.name: [r.delivery.item.event_id for r in records]  # type: ignore[union-attr]
                     for path, records in files}  # fmt: skip
            # Held by this process while the block runs: another taker skips it.
            with open(orphan, "rb") as probe:
                try:
                    fcntl.flock(probe.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                    locked_elsewhere = False
                except OSError:
                    locked_elsewhere = True
    finally:
        holder.kill()
        holder.wait()
        assert holder.stdout is not None
        holder.stdout.close()
    assert found == {orphan.name: ["dead1", "dead2"]}
    assert locked_elsewhere


def test_depth_counts_every_file_in_the_folder(
    tmp_path: Path, spools: Callable[[Path], Spool]
) -> None:
    first, second = spools(tmp_path), spools(tmp_path)
    first.append(deliveries("a", "b"), AT)
    second.append(deliveries("c"), AT)
    start = time.monotonic()

    assert first.depth() == second.depth() == 3
    assert time.monotonic() - start < 60  # (a sanity bound, not a timing claim)
