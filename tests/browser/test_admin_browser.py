"""The admin UI in headless Chromium, as an on-call operator uses it."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from app.models import AuditEntry, Execution, Restart
from tests.browser.conftest import LiveServer, login, wait_until
from tests.helpers import transaction

pytestmark = pytest.mark.browser

Shoot = Callable[[Any, str], Path]


def test_login_page_then_the_list(
    live_server: LiveServer, new_page: Callable[..., Any], screenshots: Shoot
) -> None:
    page = new_page()
    page.goto(live_server.path("/admin/"))
    assert "/admin/login" in page.url
    screenshots(page, "01-login")

    login(page, live_server)

    assert page.url.rstrip("/").endswith("/admin")
    rows = page.locator("table.executions tbody tr")
    assert rows.count() == 4 + len(live_server.seeded.others)
    running = page.locator(f"tr[data-execution='{live_server.seeded.running}'] [data-status]")
    assert running.get_attribute("data-status") == "RUNNING"
    assert "running" in running.inner_text()
    # Times are shown in the browser's zone (Europe/Berlin here), UTC stays on hover.
    first = page.locator("time[data-local]").first
    assert first.get_attribute("title", timeout=2000)
    assert "UTC" in (first.get_attribute("title") or "")
    assert "UTC" not in first.inner_text()
    assert page.locator(".summary .tile").count() == 5
    screenshots(page, "02-executions")


def test_filter_the_list_and_keep_the_filters_while_it_refreshes(
    live_server: LiveServer, new_page: Callable[..., Any], screenshots: Shoot
) -> None:
    page = new_page(as_user="olivia")
    page.goto(live_server.path("/admin/"))

    page.select_option("#status", "FAILURE")
    page.fill("#host", "web3")
    with page.expect_navigation():
        page.click("[data-test=apply-filters]")

    assert "status=FAILURE" in page.url and "host=web3" in page.url
    statuses = page.locator("table.executions tbody [data-status]").all_inner_texts()
    assert statuses and all(text.endswith("failure") for text in statuses)
    assert live_server.seeded.restarted not in page.content()  # it succeeded in the end
    # The list refreshes itself every second here, with the same filters: wait for a refresh
    # answer to arrive and be swapped in (htmx fires htmx:afterSwap on the swapped element).
    page.evaluate(
        "window.__swaps = 0;"
        " document.body.addEventListener('htmx:afterSwap', () => { window.__swaps += 1; });"
    )
    with page.expect_response(
        lambda r: r.request.headers.get("hx-request") == "true" and "host=web3" in r.url,
        timeout=5000,
    ):
        pass
    # A function, not an expression: Playwright polls an expression string with eval, which
    # the page's Content Security Policy (script-src 'self') refuses once the first check
    # finds no swap yet.
    page.wait_for_function("() => window.__swaps > 0", timeout=5000)
    assert page.locator("#host").input_value() == "web3"
    assert page.locator("table.executions tbody tr").count() == len(statuses)
    screenshots(page, "03-executions-filtered")


def test_open_an_execution_and_read_its_timeline(
    live_server: LiveServer, new_page: Callable[..., Any], screenshots: Shoot
) -> None:
    page = new_page(as_user="olivia")
    page.goto(live_server.path("/admin/"))
    restarted = live_server.seeded.restarted

    page.click(f"tr[data-execution='{restarted}'] td.job a")
    page.wait_for_url(f"**/admin/executions/{restarted}")

    assert page.locator("#live-detail").get_attribute("hx-get") is None  # finished: static
    bars = page.locator("svg.timeline-svg rect.bar")
    assert bars.count() == 3
    assert page.locator("svg.timeline-svg rect.bar-bad").count() == 2
    assert page.locator("svg.timeline-svg rect.bar-ok").count() == 1
    labels = page.locator("svg.timeline-svg text.tl-label").all_text_contents()
    assert [label.split(" · ")[0] for label in labels] == ["Run 1", "Run 2", "Run 3"]
    assert page.locator("table.runs tbody tr").count() == 3
    assert page.locator("svg.timeline-svg line.tl-mark").count() == 2  # two restarts sent
    decisions = page.locator("table.decisions tbody tr")
    assert decisions.count() == 2
    assert "flaky-network" in decisions.first.inner_text()
    attempts = page.locator("table.attempts tbody tr")
    assert attempts.count() == 2 and "200" in attempts.first.inner_text()
    screenshots(page, "04-execution-detail")

    page.locator("table.events details summary").first.click()
    assert "playbook_on_start" in page.locator("table.events pre").first.inner_text()


def test_restart_as_operator(
    live_server: LiveServer, new_page: Callable[..., Any], screenshots: Shoot
) -> None:
    page = new_page(as_user="olivia")
    skipped = live_server.seeded.skipped
    page.goto(live_server.path(f"/admin/executions/{skipped}"))
    assert "rule_skip" in page.locator("table.decisions").inner_text()

    page.uncheck("#actions input[value=db2]")
    page.click("[data-test=restart]")
    page.wait_for_url(re.compile(r".*/restart\?.*"))
    assert page.is_checked("input[name=hosts][value=db1]")
    assert not page.is_checked("input[name=hosts][value=db2]")
    page.fill("#note", "INC-42 migration lock released")
    screenshots(page, "05-confirm-restart")
    page.click("[data-test=confirm-restart]")

    page.wait_for_url(f"**/admin/executions/{skipped}#restarts")
    assert "Restart queued (db1)" in page.locator(".flash-success").inner_text()
    row = page.locator("table.restarts tr.restart-row").first
    assert "pending" in row.inner_text() and "manual by olivia" in row.inner_text()
    with transaction(live_server.app) as session:
        pk = session.scalar(select(Execution.id).where(Execution.execution_id == skipped))
        restart = session.scalars(select(Restart).where(Restart.execution_pk == pk)).one()
        assert (restart.hosts, restart.manual, restart.state) == (["db1"], True, "pending")
        audit = session.scalars(
            select(AuditEntry).where(AuditEntry.action == "restart", AuditEntry.target == skipped)
        ).one()
        assert audit.actor == "olivia"
    screenshots(page, "06-execution-restart-queued")


def test_viewer_is_refused(live_server: LiveServer, new_page: Callable[..., Any]) -> None:
    page = new_page(as_user="victor")
    pending = live_server.seeded.pending
    page.goto(live_server.path(f"/admin/executions/{pending}"))

    assert page.locator("[data-test=restart]").count() == 0
    assert "viewer" in page.locator("#actions").inner_text()
    with page.expect_request(  # a restart is pending: the page keeps itself current
        lambda r: r.headers.get("hx-request") == "true" and r.url.endswith(pending)
    ):
        pass
    assert page.locator("#live-detail svg.timeline-svg rect.bar").count() == 1
    response = page.goto(live_server.path(f"/admin/executions/{pending}/restart"))
    assert response is not None and response.status == 403
    assert "Only operators" in page.inner_text("main")

    token = page.goto(live_server.path("/admin/")) and page.locator(
        "input[name=csrf_token]"
    ).first.get_attribute("value")
    posted = page.request.post(
        live_server.path(f"/admin/executions/{pending}/restart"),
        form={"csrf_token": token or "", "hosts": "web2"},
        max_redirects=0,
    )
    assert posted.status == 403


def test_restart_without_a_csrf_token_is_refused(
    live_server: LiveServer, new_page: Callable[..., Any], screenshots: Shoot
) -> None:
    page = new_page(as_user="olivia")
    pending = live_server.seeded.pending
    with transaction(live_server.app) as session:
        restart_id = session.scalar(
            select(Restart.id)
            .join(Execution, Execution.id == Restart.execution_pk)
            .where(Execution.execution_id == pending, Restart.state == "pending")
        )
    page.goto(live_server.path(f"/admin/restarts/{restart_id}/cancel"))
    form = page.locator("form[action$='/cancel']")
    form.locator("input[name=csrf_token]").evaluate("input => input.remove()")
    assert form.locator("input[name=csrf_token]").count() == 0
    with page.expect_navigation():
        page.click("[data-test=confirm-cancel]")

    assert "could not be accepted" in page.inner_text("main")  # the page title
    assert "CSRF" in page.inner_text("main")
    screenshots(page, "07-csrf-refused")
    with transaction(live_server.app) as session:
        assert session.get(Restart, restart_id).state == "pending"  # type: ignore[union-attr]


def test_policy_page_explains_a_decision(
    live_server: LiveServer, new_page: Callable[..., Any], screenshots: Shoot
) -> None:
    page = new_page(as_user="olivia")
    page.goto(live_server.path("/admin/policy"))
    assert "no-db-migrations" in page.locator("table.rules").inner_text()

    page.fill("#execution_id", live_server.seeded.skipped)
    with page.expect_navigation():
        page.click("[data-test=explain]")

    explained = page.locator(".explained").inner_text()
    assert "rule_skip" in explained and "← decides" in explained
    assert page.locator(".checks li").count() >= 5
    screenshots(page, "08-policy")


def test_overview_page(
    live_server: LiveServer, new_page: Callable[..., Any], screenshots: Shoot
) -> None:
    page = new_page(as_user="olivia")
    page.goto(live_server.path("/admin/overview"))

    assert page.locator("svg.chart-svg g.hour").count() == 24
    assert page.locator("svg.chart-svg rect.bar-bad").count() >= 3
    assert "web3" in page.locator("#quarantine").inner_text()
    screenshots(page, "09-overview")


def test_phone_width_list_is_readable(
    live_server: LiveServer, new_page: Callable[..., Any], screenshots: Shoot
) -> None:
    page = new_page(
        as_user="olivia", viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True
    )
    page.goto(live_server.path("/admin/"))

    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390
    screenshots(page, "10-executions-phone")
    page.goto(live_server.path(f"/admin/executions/{live_server.seeded.restarted}"))
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    screenshots(page, "11-execution-detail-phone")


def test_dark_mode_detail(
    live_server: LiveServer, new_page: Callable[..., Any], screenshots: Shoot
) -> None:
    page = new_page(as_user="olivia", color_scheme="dark")
    page.goto(live_server.path(f"/admin/executions/{live_server.seeded.restarted}"))

    def luminance(css: str) -> float:
        red, green, blue = (int(part) for part in css[css.index("(") + 1 : -1].split(",")[:3])
        return (0.2126 * red + 0.7152 * green + 0.0722 * blue) / 255

    body = page.evaluate(
        "(() => { const s = getComputedStyle(document.body);"
        " return [s.backgroundColor, s.color]; })()"
    )
    heading = page.evaluate("getComputedStyle(document.querySelector('h1')).color")
    assert luminance(body[0]) < 0.15, body  # a dark page ...
    assert luminance(body[1]) > 0.7, body  # ... with light text
    assert luminance(heading) > 0.7, heading
    screenshots(page, "12-execution-detail-dark")


def test_log_out(live_server: LiveServer, new_page: Callable[..., Any]) -> None:
    page = new_page()
    login(page, live_server, "lena")

    page.click("[data-test=logout]")
    page.wait_for_url("**/admin/login")
    assert "Signed out" in page.inner_text("main")
    page.goto(live_server.path("/admin/overview"))
    assert "/admin/login" in page.url
    wait_until(lambda: page.locator("#name").count() == 1)
