"""Where a Runner fact is not published, respawn's client tolerates either answer
(docs/runner.md): the single-execution path, the executions list's order, the status API."""

from __future__ import annotations

from typing import Any

import pytest

from app.runner import RunnerClient, RunnerNotFound
from app.runner.documents import parse_execution_document
from app.runner.listing import page_order, recent_executions
from tests.runner.fakes import API, AUTH, FakeRunner, Seen, fake_session

ACCOUNT, JOB = "XXXX", "job-1"


def client_for(fake: FakeRunner, notes: dict[str, str] | None = None) -> RunnerClient:
    def note(key: str, text: str) -> None:
        if notes is not None:
            notes[key] = text

    return RunnerClient(fake_session(fake), API, AUTH, "u", "p", sleep=lambda _: None, on_note=note)


def execution(eid: str, start: int, end: int | None, status: str = "FAILURE") -> dict[str, Any]:
    return {
        "execution_id": eid,
        "job_id": JOB,
        "account_alias": ACCOUNT,
        "status": status,
        "timers": [{"start": start, "end": end}],
        "failed_hosts": ["web1"],
    }


def page(items: list[dict[str, Any]], number: int, total: int, size: int = 100) -> dict[str, Any]:
    return {"totalSize": total, "page": number, "size": size, "results": items}


def test_a_404_on_the_execution_path_is_confirmed_in_the_jobs_list() -> None:
    fake, notes = FakeRunner(), {}
    listed = execution("e-2", 1_700_000_000_000, None)

    def handler(seen: Seen) -> Any:
        if seen.path.endswith("/executions/e-2"):
            return (404, {"message": "not found"})
        return (200, page([execution("e-1", 1, 2), listed], 0, 2))

    fake.handler = handler
    client = client_for(fake, notes)

    found = client.lookup_execution(ACCOUNT, JOB, "e-2")
    again = client.lookup_execution(ACCOUNT, JOB, "e-2")

    assert found.execution_id == again.execution_id == "e-2"
    # Once the path is known not to work, the list answers directly: one 404 in all.
    paths = [s.path for s in fake.api_calls]
    assert paths.count(f"jobs/{ACCOUNT}/{JOB}/executions/e-2") == 1
    assert client.execution_path_unsupported
    assert "verifying executions by listing" in notes["execution_path"]


def test_an_execution_in_neither_place_is_gone() -> None:
    fake = FakeRunner()
    fake.handler = lambda seen: (
        (404, {"message": "not found"})
        if seen.path.endswith("/executions/e-9")
        else (200, page([execution("e-1", 1, 2)], 0, 1))
    )
    client = client_for(fake)

    with pytest.raises(RunnerNotFound):
        client.lookup_execution(ACCOUNT, JOB, "e-9")
    assert not client.execution_path_unsupported  # the path works: the execution is gone


@pytest.mark.parametrize("shape", ["array", "page"])
def test_status_events_come_as_a_bare_array_or_pages(shape: str) -> None:
    events = [{"id": f"ev-{n}", "event_type": "runner_on_ok", "execution_id": "e-1"}
              for n in range(150)]  # fmt: skip
    fake = FakeRunner()

    def handler(seen: Seen) -> Any:
        assert seen.path == f"status/{ACCOUNT}/job/{JOB}/execution/e-1"
        if shape == "array":
            return (200, events)
        number = int(seen.url.split("page=")[1].split("&")[0])
        return (200, page(events[number * 100 : (number + 1) * 100], number, len(events)))

    fake.handler = handler

    found = client_for(fake).status_events(ACCOUNT, JOB, "e-1")

    assert [e["id"] for e in found] == [e["id"] for e in events]


NOW = 1_800_000_000_000
WINDOW_START = NOW - 6 * 3600 * 1000


def history(count: int, newest_first: bool) -> list[dict[str, Any]]:
    """`count` executions a minute apart, the latest ten within the window."""
    items = [
        execution(f"e-{n:04d}", NOW - (count - n) * 60_000 - 6 * 3600 * 1000 + 10 * 60_000,
                  NOW - (count - n) * 60_000 - 6 * 3600 * 1000 + 10 * 60_000 + 1000)
        for n in range(count)
    ]  # fmt: skip
    return list(reversed(items)) if newest_first else items


@pytest.mark.parametrize("newest_first", [True, False], ids=["newest-first", "oldest-first"])
def test_the_reconciler_reads_the_window_whatever_the_order(newest_first: bool) -> None:
    items = history(1000, newest_first)
    fake = FakeRunner()

    def handler(seen: Seen) -> Any:
        number = int(seen.url.split("page=")[1].split("&")[0])
        return (200, page(items[number * 100 : (number + 1) * 100], number, len(items)))

    fake.handler = handler

    listing = recent_executions(client_for(fake), ACCOUNT, WINDOW_START, max_pages=20)

    assert sorted(d.execution_id for d in listing.documents) == [
        f"e-{n:04d}" for n in range(990, 1000)
    ]
    assert listing.order == ("newest_first" if newest_first else "oldest_first")
    assert not listing.capped
    # Newest first: the first page holds the window's start. Oldest first: the first page
    # tells the order, then the last page holds the whole window.
    assert listing.pages == (1 if newest_first else 2)


def test_an_order_that_cannot_be_told_is_read_to_the_cap_and_the_cap_is_reported() -> None:
    items = history(1000, newest_first=True)
    items[0], items[50] = items[50], items[0]  # not sorted either way
    fake = FakeRunner()
    fake.handler = lambda seen: (
        200,
        page(items[int(seen.url.split("page=")[1].split("&")[0]) * 100 :][:100],
             int(seen.url.split("page=")[1].split("&")[0]), len(items)),
    )  # fmt: skip

    listing = recent_executions(client_for(fake), ACCOUNT, WINDOW_START, max_pages=5)

    assert listing.order == "unknown" and listing.capped and listing.pages == 5


def test_page_order() -> None:
    def doc(start: int) -> Any:
        return parse_execution_document(execution("e", start, start + 1))

    assert page_order([doc(NOW), doc(NOW - 10)]) == "newest_first"
    assert page_order([doc(NOW - 10), doc(NOW)]) == "oldest_first"
    assert page_order([doc(NOW)]) == "unknown"
