"""The Insights page in headless Chromium, over a history with planted patterns."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.plant import PLANT_POLICY, Planted, plant, planted_patterns
from tests.browser.conftest import LiveServer, Seeded, browser_app, copy_database, serving
from tests.helpers import save_user

pytestmark = pytest.mark.browser

Shoot = Callable[[Any, str], Path]


@pytest.fixture(scope="module")
def planted_server(
    tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path
) -> Iterator[tuple[LiveServer, Planted]]:
    tmp = tmp_path_factory.mktemp("insights")
    url = copy_database(tmp, sqlite_template)
    planted = plant(url, planted_patterns(), now=dt.datetime.now(dt.UTC), seed=3)
    app = browser_app(tmp, url, PLANT_POLICY)
    save_user(app, "olivia", "operator", "correct-horse-battery")
    with serving(app, Seeded()) as server:
        yield server, planted


@pytest.fixture(scope="module")
def live_server(planted_server: tuple[LiveServer, Planted]) -> LiveServer:
    """The sign-in fixtures of tests/browser/conftest.py sign in here."""
    return planted_server[0]


def test_the_insights_page_shows_signatures_and_copies_a_suggested_rule(
    planted_server: tuple[LiveServer, Planted],
    new_page: Callable[..., Any],
    screenshots: Shoot,
) -> None:
    server, planted = planted_server
    page = new_page(as_user="olivia", permissions=["clipboard-read", "clipboard-write"])
    page.goto(server.path("/admin/"))
    page.click("nav.nav >> text=Insights")

    assert page.url.endswith("/admin/insights")
    assert page.locator("nav.nav a[aria-current=page]").inner_text() == "Insights"
    cards = page.locator("[data-test=insight]")
    assert cards.count() == 8
    never = page.locator(f"#sig-{planted.keys['never']}")
    assert "Connection refused" in never.locator("h2").inner_text()
    assert never.locator("[data-test=attempts] tbody tr").count() == 2
    assert "action: skip" in never.locator("[data-test=rule]").inner_text()
    assert never.locator(".spark rect").count() > 0
    second = page.locator(f"#sig-{planted.keys['second-try']}")
    assert "max_restarts: 4" in second.locator("[data-test=rule]").inner_text()
    noise = page.locator(f"#sig-{planted.keys['noise-0']}")
    assert noise.locator("[data-test=rule]").count() == 0
    assert "fewer than 10" in noise.inner_text()
    whole = screenshots(page, "20-insights")
    never.screenshot(path=str(whole.with_name("21-insights-signature.png")))

    never.locator("[data-test=copy]").click()

    page.wait_for_function(
        "b => b.textContent === 'Copied'", arg=never.locator("[data-test=copy]").element_handle()
    )
    copied = page.evaluate("navigator.clipboard.readText()")
    assert copied.strip().startswith("- name: suggested-skip-")
    # An example execution opens its page.
    with page.expect_navigation():
        never.locator("a[href*='/admin/executions/']").first.click()
    assert "/admin/executions/" in page.url
