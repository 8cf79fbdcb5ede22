"""PolicySource: load at start, follow edits, refuse bad ones and keep the last good policy."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from app.core.policy_source import LoadedPolicy, PolicySource
from app.policy import DEFAULT_POLICY_TEXT, PolicyError, parse_policy

GOOD = "version: 1\nrules:\n  - name: first\n"
BETTER = "version: 1\nrules:\n  - name: first\n  - name: second\n    when: {job: x}\n"
BAD = "version: 1\nrules:\n  - name: first\n    retries: 3\n"
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


class Clocks:
    """A monotonic clock and a wall clock the test moves by hand."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.wall = T0

    def monotonic(self) -> float:
        return self.seconds

    def utc(self) -> datetime:
        return self.wall

    def advance(self, seconds: float) -> None:
        self.seconds += seconds
        self.wall += timedelta(seconds=seconds)


@pytest.fixture
def clocks() -> Clocks:
    return Clocks()


def source_for(path: Path, clocks: Clocks, interval: float = 0.0) -> PolicySource:
    return PolicySource(
        path, check_interval=interval, clock=clocks.monotonic, wall_clock=clocks.utc
    )


def write(path: Path, text: str | bytes) -> None:
    """Write and make sure the modification time moves, as it would between two real edits."""
    before = path.stat().st_mtime_ns if path.exists() else 0
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    if path.stat().st_mtime_ns == before:
        os.utime(path, ns=(before + 1_000_000, before + 1_000_000))


def rule_names(loaded: LoadedPolicy) -> list[str]:
    return [r.name for r in loaded.policy.rules]


def test_missing_file_uses_the_builtin_policy(tmp_path: Path, clocks: Clocks) -> None:
    source = source_for(tmp_path / "policy.yaml", clocks)
    loaded = source.current()
    assert loaded.source == "builtin"
    assert loaded.version == parse_policy(DEFAULT_POLICY_TEXT).version_hash
    assert loaded.policy.rules == ()
    assert loaded.loaded_at == T0
    assert not source.is_stale and source.last_error is None


def test_loads_the_file_at_start(tmp_path: Path, clocks: Clocks) -> None:
    path = tmp_path / "policy.yaml"
    write(path, GOOD)
    loaded = source_for(path, clocks).current()
    assert loaded.source == str(path)
    assert loaded.version == parse_policy(GOOD).version_hash == loaded.policy.version_hash
    assert rule_names(loaded) == ["first"]
    assert loaded.loaded_at == T0


def test_invalid_file_at_start_refuses_to_start(tmp_path: Path, clocks: Clocks) -> None:
    path = tmp_path / "policy.yaml"
    write(path, BAD)
    with pytest.raises(PolicyError) as caught:
        source_for(path, clocks)
    assert [str(p) for p in caught.value.problems] == [
        f"{path}:4: unknown key 'retries' in rules[0]; expected one of: name, description, when, "
        "action, hosts, max_restarts, backoff, deadline, require_unchanged, ignore_blackouts, "
        "notify"
    ]


def test_unreadable_file_at_start_refuses_to_start(tmp_path: Path, clocks: Clocks) -> None:
    path = tmp_path / "policy.yaml"
    path.mkdir()
    with pytest.raises(PolicyError, match="cannot read the policy file"):
        source_for(path, clocks)


def test_non_utf8_file_at_start(tmp_path: Path, clocks: Clocks) -> None:
    path = tmp_path / "policy.yaml"
    write(path, b"version: 1\n\n# \xff\n")
    with pytest.raises(PolicyError, match=r"policy.yaml:3: not UTF-8"):
        source_for(path, clocks)


def test_an_edit_is_picked_up(tmp_path: Path, clocks: Clocks) -> None:
    path = tmp_path / "policy.yaml"
    write(path, GOOD)
    source = source_for(path, clocks)
    clocks.advance(5)
    write(path, BETTER)
    loaded = source.current()
    assert rule_names(loaded) == ["first", "second"]
    assert loaded.version == parse_policy(BETTER).version_hash
    assert loaded.loaded_at == T0 + timedelta(seconds=5)
    assert not source.is_stale


def test_an_invalid_edit_keeps_the_last_good_policy(tmp_path: Path, clocks: Clocks) -> None:
    path = tmp_path / "policy.yaml"
    write(path, GOOD)
    source = source_for(path, clocks)
    good = source.current()
    clocks.advance(3)
    write(path, BAD)
    assert source.current() is good
    assert source.is_stale
    error = source.last_error
    assert error is not None
    assert error.messages[0].startswith(f"{path}:4: unknown key 'retries'")
    assert error.at == T0 + timedelta(seconds=3)
    assert error.version == hashlib.sha256(BAD.encode()).hexdigest()[:12]
    # the same refused content is not reported anew
    clocks.advance(3)
    os.utime(path)
    assert source.current() is good
    assert source.last_error == error


def test_fixing_the_file_clears_the_error(tmp_path: Path, clocks: Clocks) -> None:
    path = tmp_path / "policy.yaml"
    write(path, GOOD)
    source = source_for(path, clocks)
    write(path, BAD)
    source.current()
    assert source.is_stale
    write(path, BETTER)
    assert rule_names(source.current()) == ["first", "second"]
    assert not source.is_stale and source.last_error is None


def test_reverting_to_the_policy_in_force_clears_the_error(tmp_path: Path, clocks: Clocks) -> None:
    path = tmp_path / "policy.yaml"
    write(path, GOOD)
    source = source_for(path, clocks)
    good = source.current()
    write(path, BAD)
    source.current()
    write(path, GOOD)
    assert source.current() is good
    assert not source.is_stale


def test_the_file_is_looked_at_most_every_check_interval(tmp_path: Path, clocks: Clocks) -> None:
    path = tmp_path / "policy.yaml"
    write(path, GOOD)
    source = source_for(path, clocks, interval=2.0)
    good = source.current()
    write(path, BETTER)
    clocks.advance(1.9)
    assert source.current() is good
    clocks.advance(0.1)
    assert rule_names(source.current()) == ["first", "second"]


def test_an_unchanged_stat_skips_the_read(
    tmp_path: Path, clocks: Clocks, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "policy.yaml"
    write(path, GOOD)
    source = source_for(path, clocks)
    reads = 0
    real_read = source._read

    def counting_read() -> bytes:
        nonlocal reads
        reads += 1
        return real_read()

    monkeypatch.setattr(source, "_read", counting_read)
    for _ in range(5):
        source.current()
    assert reads == 0
    os.utime(path, ns=(path.stat().st_mtime_ns + 10**9,) * 2)
    source.current()
    assert reads == 1


def test_touching_the_file_keeps_the_same_policy(tmp_path: Path, clocks: Clocks) -> None:
    path = tmp_path / "policy.yaml"
    write(path, GOOD)
    source = source_for(path, clocks)
    good = source.current()
    clocks.advance(10)
    os.utime(path, ns=(path.stat().st_mtime_ns + 10**9,) * 2)
    assert source.current() is good  # same content hash: not re-parsed, same loaded_at


def test_an_atomic_replace_is_noticed(tmp_path: Path, clocks: Clocks) -> None:
    path = tmp_path / "policy.yaml"
    write(path, GOOD)
    source = source_for(path, clocks)
    stat = path.stat()
    replacement = tmp_path / "policy.yaml.new"
    replacement.write_text(GOOD.replace("first", "third"))  # same size
    os.utime(replacement, ns=(stat.st_mtime_ns, stat.st_mtime_ns))
    os.replace(replacement, path)
    assert rule_names(source.current()) == ["third"]


def test_reload_reads_even_when_the_stat_looks_the_same(tmp_path: Path, clocks: Clocks) -> None:
    path = tmp_path / "policy.yaml"
    write(path, GOOD)
    source = source_for(path, clocks, interval=60)
    stat = path.stat()
    path.write_text(GOOD.replace("first", "other"))  # same size, same inode
    os.utime(path, ns=(stat.st_mtime_ns, stat.st_mtime_ns))
    clocks.advance(120)
    assert rule_names(source.current()) == ["first"]
    assert rule_names(source.reload()) == ["other"]


def test_a_deleted_file_keeps_the_last_good_policy(tmp_path: Path, clocks: Clocks) -> None:
    path = tmp_path / "policy.yaml"
    write(path, GOOD)
    source = source_for(path, clocks)
    good = source.current()
    path.unlink()
    assert source.current() is good
    assert source.is_stale
    assert source.last_error is not None
    assert source.last_error.messages == (
        f"{path}:1: the policy file is gone; the last policy loaded from it stays in force",
    )
    write(path, GOOD)
    assert source.current() is good
    assert not source.is_stale


def test_a_file_that_appears_later_is_loaded(tmp_path: Path, clocks: Clocks) -> None:
    path = tmp_path / "policy.yaml"
    source = source_for(path, clocks)
    assert source.current().source == "builtin"
    write(path, BAD)
    assert source.current().source == "builtin"
    assert source.is_stale
    write(path, GOOD)
    loaded = source.current()
    assert loaded.source == str(path) and rule_names(loaded) == ["first"]
    assert not source.is_stale


def test_an_invalid_file_removed_again_is_not_stale(tmp_path: Path, clocks: Clocks) -> None:
    path = tmp_path / "policy.yaml"
    source = source_for(path, clocks)
    write(path, BAD)
    source.current()
    assert source.is_stale
    path.unlink()
    assert source.current().source == "builtin"
    assert not source.is_stale


def test_a_non_utf8_edit_is_refused_with_its_line(tmp_path: Path, clocks: Clocks) -> None:
    path = tmp_path / "policy.yaml"
    write(path, GOOD)
    source = source_for(path, clocks)
    write(path, b"version: 1\n# \xff\n")
    source.current()
    assert source.last_error is not None
    assert source.last_error.messages == (
        f"{path}:2: not UTF-8 text: the policy file must be UTF-8",
    )


def test_concurrent_readers_always_see_a_whole_policy(tmp_path: Path, clocks: Clocks) -> None:
    path = tmp_path / "policy.yaml"
    write(path, GOOD)
    source = PolicySource(path, check_interval=0)
    versions = {parse_policy(text).version_hash for text in (GOOD, BETTER)}
    seen: list[str] = []
    failures: list[BaseException] = []
    stop = threading.Event()

    def reader() -> None:
        try:
            while not stop.is_set():
                loaded = source.current()
                seen.append(loaded.version)
                assert loaded.policy.version_hash == loaded.version
                time.sleep(0.0001)
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            failures.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for thread in threads:
        thread.start()
    for index in range(12):
        write(path, (GOOD, BETTER, BAD)[index % 3])
        time.sleep(0.002)
    write(path, BETTER)
    source.reload()
    stop.set()
    for thread in threads:
        thread.join()
    assert not failures
    assert set(seen) <= versions
    assert source.current().version == parse_policy(BETTER).version_hash
