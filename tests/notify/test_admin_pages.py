"""The notification log and route mutes in the admin UI, through the test client with a
signed-in user and CSRF tokens, on SQLite and PostgreSQL; pauses and resumes from the UI and
the API told to the channels."""

from __future__ import annotations

import datetime as dt
import functools
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from werkzeug.security import generate_password_hash

from app.dispatcher.notifier import Notifier
from app.extensions import get_runtime
from app.models import AuditEntry, Notification, RouteMute
from tests.conftest import CALLBACK_TOKEN
from tests.feed import failing_run_events, ms
from tests.helpers import save_user, sign_in, transaction
from tests.notify.conftest import PUBLIC_URL, Receivers

PASSWORD = "a-long-test-password"
_TOKEN = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')
ROUTES = (
    "    - {name: db, events: [gave_up], jobs: ['db-*'], channels: [oncall]}\n"
    "    - {name: pauses, events: [paused, resumed], channels: [oncall]}\n"
)
SKIP_DB = (
    "version: 1\n"
    "limits: {per_job: null, per_account: null, global: null, per_host: null}\n"
    "rules:\n  - {name: hands-off, when: {job: 'db-*'}, action: skip, notify: true}\n"
)


@pytest.fixture(autouse=True)
def _cheap_password_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    # As in the admin tests: scrypt is slow, and the check reads the method from the hash.
    cheap = functools.partial(generate_password_hash, method="pbkdf2:sha256:1000")
    monkeypatch.setattr("app.core.users.generate_password_hash", cheap)


@pytest.fixture
def napp(make_app: Callable[..., Flask], policy_file: Path, receivers: Receivers) -> Flask:
    policy_file.write_text(SKIP_DB + receivers.notify_yaml(routes=ROUTES, default="[chat]"))
    app = make_app(public_url=PUBLIC_URL)
    save_user(app, "olivia", "operator", PASSWORD)
    save_user(app, "victor", "viewer", PASSWORD)
    return app


def signed_in(app: Flask, name: str) -> FlaskClient:
    client = app.test_client()
    sign_in(client, name, PASSWORD)
    return client


def token_of(client: FlaskClient, path: str = "/admin/notifications") -> str:
    found = _TOKEN.search(client.get(path).get_data(as_text=True))
    assert found, f"no CSRF token on {path}"
    return found.group(1)


def fail(client: FlaskClient, n: int, job: str = "db-migrate") -> str:
    execution = f"{n:08d}-0000-4000-8000-00000000ad31"
    items = failing_run_events(
        ms(dt.datetime.now(dt.UTC)) - 60_000, ("web2",), prefix=f"a{n}-",
        execution_id=execution, job_id=job,
    )  # fmt: skip
    response = client.post(
        f"/callbacks/{CALLBACK_TOKEN}", data=json.dumps(items), content_type="application/json"
    )
    assert response.status_code == 202
    return execution


def rows(app: Flask) -> list[tuple[str, str, str, str]]:
    with transaction(app) as session:
        return [
            (n.kind, n.route, n.channel, n.state)
            for n in session.scalars(select(Notification).order_by(Notification.id))
        ]


def test_an_operator_mutes_a_route_and_its_events_are_logged_not_sent(
    napp: Flask, receivers: Receivers
) -> None:
    operator = signed_in(napp, "olivia")
    page = operator.get("/admin/notifications").get_data(as_text=True)
    assert "<code>db</code>" in page and "<code>default</code>" in page
    assert 'data-test="mute"' in page and "No notifications." in page

    token = token_of(operator)
    muted = operator.post(
        "/admin/notifications/mute", data={"csrf_token": token, "route": "db", "hours": "4"}
    )
    assert muted.status_code == 302
    assert muted.location.endswith("/admin/notifications#routes")
    page = operator.get("/admin/notifications").get_data(as_text=True)
    assert "Route db muted for 4 hours." in page
    assert 'badge-warn">muted</span> until' in page and "by olivia" in page

    first = fail(operator, 1)
    assert rows(napp) == [("gave_up", "db", "oncall", "muted")]  # not sent to the default
    assert Notifier(get_runtime(napp), name="n1").run_once() == 0
    assert receivers.hook.requests() == []

    operator.post(
        "/admin/notifications/mute", data={"csrf_token": token, "route": "db", "hours": "0"}
    )
    fail(operator, 2)
    assert rows(napp)[-1] == ("gave_up", "db", "oncall", "pending")
    assert Notifier(get_runtime(napp), name="n1").run_once() == 1
    (got,) = receivers.hook.unique()
    assert got.json["type"] == "gave_up"

    page = operator.get("/admin/notifications").get_data(as_text=True)
    assert "Route db unmuted." in page
    assert 'data-state="muted"' in page and 'data-state="sent"' in page
    assert "HTTP 200: ok" in page and "1 muted · 1 sent" in page
    detail = operator.get(f"/admin/executions/{first}").get_data(as_text=True)
    assert 'data-test="notification-log"' in detail and 'data-state="muted"' in detail
    with transaction(napp) as session:
        audit = [(a.actor, a.action, a.target) for a in session.scalars(select(AuditEntry))]
    assert [a for a in audit if a[1] != "login"] == [
        ("olivia", "mute", "route db"),
        ("olivia", "unmute", "route db"),
    ]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_viewer_sees_the_log_but_cannot_mute(napp: Flask) -> None:
    viewer = signed_in(napp, "victor")
    page = viewer.get("/admin/notifications").get_data(as_text=True)
    assert "<code>db</code>" in page and 'data-test="mute"' not in page

    response = viewer.post(
        "/admin/notifications/mute",
        data={"csrf_token": token_of(viewer, "/admin/"), "route": "db", "hours": "4"},
    )

    assert response.status_code == 403
    assert rows(napp) == []


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize(
    ("data", "status"),
    [
        ({"route": "db", "hours": "500"}, 422),
        ({"route": "", "hours": "1"}, 422),
        ({"route": "db"}, 422),
    ],
)
def test_a_mute_form_out_of_bounds_is_refused(
    napp: Flask, data: dict[str, Any], status: int
) -> None:
    operator = signed_in(napp, "olivia")
    response = operator.post(
        "/admin/notifications/mute", data={"csrf_token": token_of(operator), **data}
    )
    assert response.status_code == status
    with transaction(napp) as session:
        assert session.scalars(select(RouteMute)).all() == []


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_without_channels_the_page_says_how_to_add_them(
    make_app: Callable[..., Flask],
) -> None:
    app = make_app()
    save_user(app, "olivia", "operator", PASSWORD)
    page = signed_in(app, "olivia").get("/admin/notifications").get_data(as_text=True)
    assert "No notification channels" in page and "No notifications." in page


def test_pauses_and_resumes_from_the_ui_and_the_api_are_told(
    napp: Flask, receivers: Receivers, api_headers: dict[str, str]
) -> None:
    operator = signed_in(napp, "olivia")
    token = token_of(operator, "/admin/")

    operator.post("/admin/pause", data={"csrf_token": token, "job": "db-migrate", "reason": "x"})
    operator.post("/admin/pause", data={"csrf_token": token, "job": "db-migrate"})  # already
    operator.post("/admin/resume", data={"csrf_token": token, "job": "db-migrate"})
    api = napp.test_client()
    assert api.put("/api/v1/pauses/global", headers=api_headers, json={}).status_code == 200
    assert api.delete("/api/v1/pauses/global", headers=api_headers).status_code == 200

    assert rows(napp) == [
        ("paused", "pauses", "oncall", "pending"),
        ("resumed", "pauses", "oncall", "pending"),
        ("paused", "pauses", "oncall", "pending"),
        ("resumed", "pauses", "oncall", "pending"),
    ]
    assert Notifier(get_runtime(napp), name="n1").run_once() == 4
    summaries = [r.json["summary"] for r in receivers.hook.unique()]
    assert summaries[:2] == [
        "automatic restarts of job db-migrate paused by olivia: x",
        "automatic restarts of job db-migrate resumed by olivia",
    ]
    assert summaries[2].startswith("automatic restarts of every job paused by api:")
    assert summaries[3].startswith("automatic restarts of every job resumed by api:")
