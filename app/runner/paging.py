"""Paged list answers of the Runner: `{totalSize, page, size, results}` or a bare array."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar, overload

from app.runner.errors import RunnerBadResponse
from app.runner.resources import Page

log = logging.getLogger(__name__)

T = TypeVar("T")


def parse_page(
    data: Any,
    page: int,
    size: int,
    parse_item: Callable[[Any], T],
    label: str = "list",
) -> Page[T]:
    """`{totalSize, page, size, results}` or a bare array; unparseable items are skipped."""
    total: int | None = None
    if isinstance(data, list):
        raw_items = data
        if len(data) > size:
            total = page * size + len(data)  # it ignored the page size: this is everything
    elif isinstance(data, Mapping) and isinstance(data.get("results"), list):
        raw_items = data["results"]
        total = _count(data.get("totalSize"))
        page = _count(data.get("page"), page)
        size = _count(data.get("size"), size) or size
    else:
        raise RunnerBadResponse("expected a page of results", operation=label)
    items: list[T] = []
    skipped = 0
    for raw in raw_items:
        try:
            items.append(parse_item(raw))
        except RunnerBadResponse as exc:
            skipped += 1
            log.warning("skipping an item of %s: %s", label, exc.message)
    return Page(tuple(items), page, size, total, skipped)


@overload
def _count(value: Any) -> int | None: ...
@overload
def _count(value: Any, default: int) -> int: ...
def _count(value: Any, default: int | None = None) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return default


def iter_pages(fetch: Callable[[int], Page[T]], max_pages: int = 1000) -> Iterator[T]:
    """Every item of a paged list, page after page, until a short or final page."""
    for number in range(max_pages):
        page = fetch(number)
        yield from page.items
        if page.is_last or not (page.items or page.skipped):
            return
    log.warning("stopped paging after %d pages", max_pages)
