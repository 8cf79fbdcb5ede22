"""Browser tests: the admin UI served by a real HTTP server, driven by headless Chromium.

Chromium is Debian's (/usr/bin/chromium), never a downloaded one. Without it the tests skip,
unless RESPAWN_REQUIRE_BROWSER=1 makes that a failure (CI). Screenshots go to the folder
named by RESPAWN_SCREENSHOTS (default test-artifacts/screenshots).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select, update
from werkzeug.serving import make_server

from app import create_app
from app.extensions import get_runtime
from app.models import Decision, Execution, Job, Restart, RestartAttempt
from tests.conftest import CALLBACK_TOKEN
from tests.feed import event, failing_run_events
from tests.helpers import save_user, transaction

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
]
REQUIRE_BROWSER = os.environ.get("RESPAWN_REQUIRE_BROWSER") == "1"
ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "correct-horse-battery"

BROWSER_POLICY = """\
version: 1
defaults:
  backoff: {initial: 0s}
rules:
  - name: no-db-migrations
    description: Database migrations need a human before any re-run.
    when: {job: "db-migrate*"}
    action: skip
  - name: flaky-network
    when:
      failure: [unreachable]
      message: "(?i)connection refused|timed out"
    max_restarts: 5
    backoff: {initial: 0s, max: 15m}
limits:
  per_host: {failures: 4, window: 24h, quarantine: 6h}
"""


@dataclass
class Seeded:
    """Execution ids of the seeded story, by role."""

    restarted: str = "e1000000-0000-4000-8000-000000000001"
    """Failed twice, restarted twice by the policy, then succeeded: three runs."""
    skipped: str = "e2000000-0000-4000-8000-000000000002"
    """A failed database migration the policy skips: free for a manual restart."""
    pending: str = "e3000000-0000-4000-8000-000000000003"
    """Failed; the policy's restart is pending."""
    running: str = "e4000000-0000-4000-8000-000000000004"
    others: list[str] = field(default_factory=list)


@dataclass
class LiveServer:
    app: Flask
    url: str
    seeded: Seeded

    def path(self, path: str) -> str:
        return self.url + path


def _post(app: Flask, body: Any) -> None:
    client = app.test_client()
    response = client.post(
        f"/callbacks/{CALLBACK_TOKEN}", data=json.dumps(body), content_type="application/json"
    )
    assert response.status_code == 202, response.get_data(as_text=True)


def _ms(moment: dt.datetime) -> int:
    return int(moment.timestamp() * 1000)


def _send_restarts(app: Flask, execution_id: str, at: dt.datetime, status: int = 200) -> None:
    """Play the dispatcher (off in tests): the pending restart went out and was accepted."""
    with transaction(app) as session:
        pk = session.scalar(select(Execution.id).where(Execution.execution_id == execution_id))
        for restart in session.scalars(
            select(Restart).where(Restart.execution_pk == pk, Restart.state == "pending")
        ):
            restart.state = "done"
            restart.sent_at = at
            restart.completed_at = at
            restart.attempts = 1
            restart.outcome = "restarted"  # what the dispatcher records (app.core.outbox)
            restart.outcome_detail = "execution is PENDING"
            session.add(
                RestartAttempt(
                    restart_id=restart.id,
                    worker="web-1:4242",
                    started_at=at,
                    finished_at=at + dt.timedelta(milliseconds=420),
                    status_code=status,
                    outcome="restarted",
                )
            )
        execution = session.get(Execution, pk)
        assert execution is not None
        execution.restart_count += 1


def _successful_run(start: int, prefix: str, **ids: Any) -> list[dict[str, Any]]:
    stats = {"web1": {"ok": 4, "changed": 1, "unreachable": 0, "failures": 0, "skipped": 0}}
    return [
        event("playbook_on_start", start, event_id=f"{prefix}1", **ids),
        event("runner_on_ok", start + 4_000, "web1", event_id=f"{prefix}2", changed=True, **ids),
        event(
            "playbook_result",
            start + 9_000,
            event_id=f"{prefix}3",
            status="SUCCESS",
            stats=stats,
            **ids,
        ),
    ]


def seed(app: Flask, now: dt.datetime) -> Seeded:
    """A small fleet's last hours, fed through the receiver as the Runner would send it."""
    seeded = Seeded()
    base = now - dt.timedelta(minutes=50)
    jobs = {
        "job-deploy-web": ("ACME", "Deploy web tier"),
        "db-migrate-orders": ("ACME", "db-migrate orders schema"),
        "job-patch-linux": ("OPS", "Monthly OS patching"),
        "job-rotate-certs": ("OPS", "Rotate TLS certificates"),
    }
    with transaction(app) as session:
        for job_id, (account, description) in jobs.items():
            session.add(Job(job_id=job_id, account_alias=account, description=description))

    def ids(execution_id: str, job_id: str) -> dict[str, Any]:
        return {"execution_id": execution_id, "job_id": job_id, "account": jobs[job_id][0]}

    # Three runs: fail, restart, fail again, restart, succeed.
    one = ids(seeded.restarted, "job-deploy-web")
    t = _ms(base)
    for item in failing_run_events(t, ("web2", "web3"), "r1", **one):
        _post(app, item)
    _send_restarts(app, seeded.restarted, base + dt.timedelta(seconds=20))
    for item in failing_run_events(t + 70_000, ("web3",), "r2", **one):
        _post(app, item)
    _send_restarts(app, seeded.restarted, base + dt.timedelta(seconds=95))
    for item in _successful_run(t + 150_000, "r3", **one):
        _post(app, item)

    two = ids(seeded.skipped, "db-migrate-orders")
    for item in failing_run_events(
        _ms(base + dt.timedelta(minutes=10)), ("db1", "db2"), "s1", **two
    ):
        _post(app, item)

    three = ids(seeded.pending, "job-patch-linux")
    for item in failing_run_events(
        _ms(base + dt.timedelta(minutes=20)), ("web2", "web4"), "p1", **three
    ):
        _post(app, item)

    four = ids(seeded.running, "job-rotate-certs")
    start = _ms(now - dt.timedelta(minutes=3))
    _post(app, event("playbook_on_start", start, event_id="g1", **four))
    _post(app, event("runner_on_ok", start + 30_000, "web1", event_id="g2", **four))

    for n in range(8):
        execution_id = f"f{n:07d}-0000-4000-8000-0000000000{n:02d}"
        job_id = ("job-patch-linux", "job-rotate-certs")[n % 2]
        moment = base - dt.timedelta(hours=2 + n * 2)
        if n % 3 == 0:
            items = _successful_run(_ms(moment), f"o{n}", **ids(execution_id, job_id))
        else:
            items = failing_run_events(_ms(moment), ("web3",), f"o{n}", **ids(execution_id, job_id))
        for item in items:
            _post(app, item)
        seeded.others.append(execution_id)

    # The receiver stamps decisions with the time it received them; spread the older ones over
    # the hours their runs happened in, so the overview chart has a shape.
    with transaction(app) as session:
        for n, execution_id in enumerate(seeded.others):
            pk = session.scalar(select(Execution.id).where(Execution.execution_id == execution_id))
            moment = base - dt.timedelta(hours=2 + n * 2)
            session.execute(
                update(Decision).where(Decision.execution_pk == pk).values(created_at=moment)
            )
            session.execute(update(Execution).where(Execution.id == pk).values(last_seen_at=moment))
    return seeded


def copy_database(tmp: Path, sqlite_template: Path) -> str:
    """A migrated SQLite database of the module's own in `tmp`; its URL."""
    database = tmp / "respawn.db"
    shutil.copy(sqlite_template, database)
    return f"sqlite:///{database}"


def browser_app(tmp: Path, database_url: str, policy: str, **settings: Any) -> Flask:
    """An app for a browser test: this policy, no dispatcher, cookies over plain HTTP."""
    policy_file = tmp / "policy.yaml"
    policy_file.write_text(policy)
    return create_app(
        {
            "database_url": database_url,
            "callback_tokens": (CALLBACK_TOKEN,),
            "testing": True,
            "dispatcher": "off",
            "policy_file": str(policy_file),
            "secure_cookies": False,
            "log_level": "WARNING",
            "spool_dir": str(tmp / "spool"),
            **settings,
        }
    )


def _server_app(tmp: Path, sqlite_template: Path) -> Flask:
    app = browser_app(
        tmp,
        copy_database(tmp, sqlite_template),
        BROWSER_POLICY,
        policy_check_interval=0.0,
        callback_ack="processed",  # the seeding reads back what it posted
    )
    app.config["ADMIN_REFRESH_SECONDS"] = 1
    return app


@contextmanager
def serving(app: Flask, seeded: Seeded) -> Iterator[LiveServer]:
    """`app` over real HTTP on a free loopback port, in a thread, until the block ends."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="live-server", daemon=True)
    thread.start()
    try:
        yield LiveServer(app, f"http://127.0.0.1:{server.server_port}", seeded)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
        get_runtime(app).engine.dispose()


@pytest.fixture(scope="module")
def live_server(
    tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path
) -> Iterator[LiveServer]:
    app = _server_app(tmp_path_factory.mktemp("browser"), sqlite_template)
    # "lena" signs out, which ends every session of hers: the others keep theirs.
    for name, role in (("olivia", "operator"), ("victor", "viewer"), ("lena", "operator")):
        save_user(app, name, role, PASSWORD)
    with serving(app, seed(app, dt.datetime.now(dt.UTC))) as server:
        yield server


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        if REQUIRE_BROWSER:
            pytest.fail(f"RESPAWN_REQUIRE_BROWSER=1 but {CHROMIUM} is missing")
        pytest.skip(f"{CHROMIUM} is not installed")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield chromium
        chromium.close()


@pytest.fixture
def screenshots() -> Callable[[Any, str], Path]:
    folder = Path(os.environ.get("RESPAWN_SCREENSHOTS") or ROOT / "test-artifacts" / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)

    def shoot(page: Any, name: str) -> Path:
        path = folder / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return shoot


@pytest.fixture(scope="module")
def signed_in(browser: Any, live_server: LiveServer) -> Callable[[str], Any]:
    """A user's signed-in cookies, made once per module (each sign-in costs a password hash)."""
    states: dict[str, Any] = {}

    def state(name: str) -> Any:
        if name not in states:
            context = browser.new_context()
            page = context.new_page()
            login(page, live_server, name)
            assert "/admin/login" not in page.url, f"{name} could not sign in"
            states[name] = context.storage_state()
            context.close()
        return states[name]

    return state


@pytest.fixture
def new_page(browser: Any, signed_in: Callable[[str], Any]) -> Iterator[Callable[..., Any]]:
    """`new_page()` opens a page in a fresh browser; `new_page(as_user="olivia")` signed in.

    Script errors, Content-Security-Policy violations and a resource the page asked for that
    is not there (a 404 other than the page itself: an icon, a script) fail the test.
    """
    contexts: list[Any] = []
    problems: list[str] = []

    def on_console(message: Any) -> None:
        if message.type == "error" and "Content Security Policy" in message.text:
            problems.append(message.text)

    def on_response(response: Any) -> None:
        if response.status == 404 and response.request.resource_type != "document":
            problems.append(f"404: {response.url}")

    def open_page(as_user: str | None = None, **options: Any) -> Any:
        options.setdefault("viewport", {"width": 1366, "height": 900})
        options.setdefault("timezone_id", "Europe/Berlin")
        options.setdefault("locale", "en-GB")
        if as_user is not None:
            options["storage_state"] = signed_in(as_user)
        context = browser.new_context(**options)
        context.set_default_timeout(10_000)
        contexts.append(context)
        page = context.new_page()
        page.on("console", on_console)
        page.on("response", on_response)
        page.on("pageerror", lambda error: problems.append(str(error)))
        return page

    yield open_page
    for context in contexts:
        context.close()
    assert problems == []


def login(page: Any, server: LiveServer, name: str = "olivia", path: str = "/admin/") -> None:
    page.goto(server.path(path))
    page.fill("#name", name)
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_load_state()


def wait_until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)
