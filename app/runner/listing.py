"""Which executions of an account the reconciler looks at: the recent ones, in any order.

The executions list pages newest first in the published SDK, but the order is not published
(docs/runner.md). This reads the first page, tells the order from its timers, and then reads
only as far as the reconcile window reaches: forward while pages are newest first, backward
from the last page while they are oldest first, every page (up to the cap) when it cannot
tell. Reaching the cap is reported, never silent.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

from app.runner.client import RunnerClient
from app.runner.documents import ExecutionDocument
from app.runner.resources import Page


@dataclass(frozen=True)
class Listing:
    documents: list[ExecutionDocument]
    pages: int
    capped: bool
    """The page cap stopped the reading before the window's end: some were not checked."""
    order: str  # newest_first | oldest_first | unknown


def last_activity_ms(document: ExecutionDocument) -> int | None:
    """The latest start or end among its timers (None: no timer yet, so it is recent)."""
    moments = [m for t in document.timers for m in (t.start_ms, t.end_ms) if m is not None]
    return max(moments) if moments else None


def _recent(documents: Sequence[ExecutionDocument], since_ms: int) -> list[ExecutionDocument]:
    found = []
    for document in documents:
        activity = last_activity_ms(document)
        if activity is None or activity >= since_ms:
            found.append(document)
    return found


def _reaches_past(documents: Sequence[ExecutionDocument], since_ms: int) -> bool:
    """In a sorted list: the window starts within this page (it holds an older execution)."""
    return any((m := last_activity_ms(d)) is not None and m < since_ms for d in documents)


def page_order(documents: Sequence[ExecutionDocument]) -> str:
    moments = [m for m in map(last_activity_ms, documents) if m is not None]
    if len(moments) < 2 or min(moments) == max(moments):
        return "unknown"
    if all(a >= b for a, b in pairwise(moments)):
        return "newest_first"
    if all(a <= b for a, b in pairwise(moments)):
        return "oldest_first"
    return "unknown"


def recent_executions(client: RunnerClient, account: str, since_ms: int, max_pages: int) -> Listing:
    first = client.list_account_executions(account, page=0)
    found = _recent(first.items, since_ms)
    order = page_order(first.items)
    if first.is_last or (order == "newest_first" and _reaches_past(first.items, since_ms)):
        return Listing(found, 1, False, order)
    if order == "oldest_first" and first.total_size is not None:
        return _backward(client, account, since_ms, max_pages, first, found)
    return _forward(client, account, since_ms, max_pages, first, found, order)


def _forward(
    client: RunnerClient,
    account: str,
    since_ms: int,
    max_pages: int,
    first: Page[ExecutionDocument],
    found: list[ExecutionDocument],
    order: str,
) -> Listing:
    pages = 1
    number = 1
    while True:
        if pages >= max_pages:
            return Listing(found, pages, True, order)
        page = client.list_account_executions(account, page=number)
        pages += 1
        found.extend(_recent(page.items, since_ms))
        if page.is_last or (order == "newest_first" and _reaches_past(page.items, since_ms)):
            return Listing(found, pages, False, order)  # the end, or past the window's start
        number += 1


def _backward(
    client: RunnerClient,
    account: str,
    since_ms: int,
    max_pages: int,
    first: Page[ExecutionDocument],
    found: list[ExecutionDocument],
) -> Listing:
    total = first.total_size or 0
    number = math.ceil(total / first.size) - 1
    pages = 1
    while number >= 1:
        if pages >= max_pages:
            return Listing(found, pages, True, "oldest_first")
        page = client.list_account_executions(account, page=number, size=first.size)
        pages += 1
        found.extend(_recent(page.items, since_ms))
        if _reaches_past(page.items, since_ms):
            break  # the window starts within this page: older ones lie before it
        number -= 1
    return Listing(found, pages, False, "oldest_first")
