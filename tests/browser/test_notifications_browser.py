"""The Notifications page in headless Chromium: the log in each state, a digest, the routes
with a mute, as an operator sees them (screenshot)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from app.core.notifications import (
    Notice,
    SendResult,
    claim_due_notifications,
    mute_route,
    notify,
    record_notification,
)
from app.db import utcnow
from app.extensions import get_runtime
from app.models import Execution
from tests.browser.conftest import LiveServer, Seeded, browser_app, copy_database, serving
from tests.helpers import save_user, transaction

pytestmark = pytest.mark.browser

Shoot = Callable[[Any, str], Path]

POLICY = """version: 1
notify:
  digest: 5m
  channels:
    oncall: {type: webhook, url: 'http://127.0.0.1:9/hook', secret: BROWSER_WEBHOOK_SECRET}
    chat: {type: slack, url: BROWSER_SLACK_URL}
  routes:
    - name: db
      jobs: ['db-*']
      channels: [oncall]
  default: [chat]
"""


def _seed(app: Any) -> None:
    runtime = get_runtime(app)
    policy = runtime.current_policy().policy
    now = utcnow()
    with transaction(app) as session:
        mute_route(session, "db", now + dt.timedelta(hours=2), "olivia", now)
    with transaction(app) as session:
        for n, job in enumerate(("db-migrate", "web-deploy", "api-deploy", "db-migrate")):
            execution = Execution(
                execution_id=f"{n:08d}-0000-4000-8000-0000000000b1",
                account_alias="ACME",
                job_id=job,
                status="FAILURE",
                failed_hosts=["web2"],
                first_seen_at=now,
                last_seen_at=now,
            )
            session.add(execution)
            session.flush()
            notify(
                session,
                policy,
                Notice(
                    "gave_up",
                    f"gave_up:{n}",
                    f"gave up on {execution.execution_id}: max_restarts (3) reached",
                    execution=execution,
                    hosts=["web2"],
                    rule="default",
                    reason="max_restarts reached",
                ),
                now,
            )
    answers = [SendResult("sent", "HTTP 200: ok"), SendResult("retry", "HTTP 503: busy")]
    with transaction(app) as session:
        for claimed, answer in zip(
            claim_due_notifications(session, "browser", now, 60.0, 10), answers, strict=False
        ):
            record_notification(session, claimed, "browser", answer, now)


@pytest.fixture(scope="module")
def notify_server(
    tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path
) -> Iterator[LiveServer]:
    tmp = tmp_path_factory.mktemp("notifications")
    app = browser_app(
        tmp,
        copy_database(tmp, sqlite_template),
        POLICY,
        public_url="https://respawn.example.com",
    )
    save_user(app, "olivia", "operator", "correct-horse-battery")
    _seed(app)
    with serving(app, Seeded()) as server:
        yield server


@pytest.fixture(scope="module")
def live_server(notify_server: LiveServer) -> LiveServer:
    """The sign-in fixtures of tests/browser/conftest.py sign in here."""
    return notify_server


def test_the_notifications_page_shows_the_log_and_the_routes(
    notify_server: LiveServer, new_page: Callable[..., Any], screenshots: Shoot
) -> None:
    page = new_page(as_user="olivia")
    page.goto(notify_server.path("/admin/"))
    page.click("nav.nav >> text=Notifications")

    assert page.url.endswith("/admin/notifications")
    assert page.locator("nav.nav a[aria-current=page]").inner_text() == "Notifications"
    text = page.locator("main").inner_text()
    routes = page.locator("[data-test=routes]").inner_text()
    assert "every event · jobs db-*" in routes and "what no route takes" in routes
    states = page.locator("[data-state]").evaluate_all("rows => rows.map(r => r.dataset.state)")
    assert {"sent", "pending", "muted"} <= set(states), states
    assert "HTTP 200: ok" in text and "HTTP 503: busy" in text
    assert "muted" in text and "olivia" in text
    screenshots(page, "22-notifications")
