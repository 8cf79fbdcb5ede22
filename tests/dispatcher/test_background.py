"""Waking the background: one idle dispatcher per piece of queued work, passed on by claims,
and the job refresh only when a failure waits for its job."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import requests
from flask import Flask

from app.dispatcher import Background
from app.extensions import get_runtime
from app.runner import RunnerClient


def background(app: Flask, dispatchers: int) -> Background:
    client = RunnerClient(
        requests.Session(), "http://127.0.0.1:9", "http://127.0.0.1:9", None, None, "token"
    )
    made = Background(get_runtime(app), client, dispatchers=dispatchers, reconcile=False)
    for dispatcher in made.dispatchers:
        dispatcher.idle = True  # as each is between passes
    return made


def woken(made: Background) -> list[bool]:
    return [d._wake.is_set() for d in made.dispatchers]


def test_queued_work_wakes_one_idle_dispatcher_and_each_claim_passes_it_on(app: Flask) -> None:
    made = background(app, 3)
    made.wake_dispatchers()
    assert woken(made) == [True, False, False]
    first = made.dispatchers[0]
    assert first.on_claimed is not None
    first.on_claimed()  # it claimed a restart, and another one is due
    assert woken(made) == [True, True, False]
    second = made.dispatchers[1].on_claimed
    assert second is not None
    second()
    assert woken(made) == [True, True, True]


def test_with_none_idle_every_dispatcher_is_woken(app: Flask) -> None:
    """A busy dispatcher may be past its last claim: none may sleep through new work."""
    made = background(app, 3)
    for dispatcher in made.dispatchers:
        dispatcher.idle = False
    made.wake_dispatchers()
    assert woken(made) == [True, True, True]


def test_the_notifier_is_woken_only_when_the_policy_notifies(
    app: Flask, policy_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without channels nothing is queued for it: a wake-up was a transaction in vain."""
    made = background(app, 1)
    made.wake_dispatchers()
    assert not made.notifier._wake.is_set()

    monkeypatch.setenv("TEST_SLACK_URL", "http://127.0.0.1:9/hook")
    policy_file.write_text(
        "version: 1\nnotify:\n  channels:\n    chat: {type: slack, url: TEST_SLACK_URL}\n"
        "  default: [chat]\n"
    )
    assert get_runtime(app).current_policy().policy.notify.enabled
    made.wake_dispatchers()
    assert made.notifier._wake.is_set()


def test_the_job_refresh_is_woken_only_when_asked(app: Flask) -> None:
    made = background(app, 1)
    made.wake(fetch_jobs=False)
    assert not made.refresh_wake.is_set()
    assert woken(made) == [True]
    made.wake()
    assert made.refresh_wake.is_set()


def test_a_dispatcher_looks_for_held_restarts_once_a_second(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not at every wake-up (one comes with each restart queued): each look is a
    transaction, on SQLite a turn at the write lock."""
    dispatcher = background(app, 1).dispatchers[0]
    looks: list[int] = []
    monkeypatch.setattr(dispatcher, "release", lambda: looks.append(1) or 0)
    dispatcher.run_once()
    dispatcher.run_once()
    assert looks == [1]
    dispatcher._next_release = 0.0  # as a second later
    dispatcher.run_once()
    assert looks == [1, 1]


def test_a_stopping_dispatcher_carries_out_what_was_handed_to_it(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Claimed in the process's name already: left behind, it would wait out its lease."""
    made = background(app, 1)
    dispatcher = made.dispatchers[0]
    carried: list[object] = []
    monkeypatch.setattr(dispatcher, "_carry_out", carried.append)
    made.handed.extend(["first", "second"])  # type: ignore[list-item]  # stand-ins for claims
    stop = threading.Event()
    stop.set()
    dispatcher.run_forever(stop)
    assert carried == ["first", "second"]
    assert not made.handed
