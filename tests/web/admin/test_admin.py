"""The admin UI through the test client, on SQLite and PostgreSQL: access, actions, pages,
and a bounded number of queries per page."""

from __future__ import annotations

import datetime as dt
import functools
import json
import random
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import insert, select
from werkzeug.security import generate_password_hash
from werkzeug.test import TestResponse

from app.core.stats import quarantined_hosts
from app.extensions import get_runtime
from app.models import (
    AuditEntry,
    Execution,
    HostFailure,
    Pause,
    Restart,
    RestartAttempt,
)
from app.policy import HostLimit, quarantined_until
from app.web.admin.views import safe_next
from tests.conftest import CALLBACK_TOKEN
from tests.feed import EXECUTION_ID, JOB_ID, failing_run_events
from tests.feed import event as feed_event
from tests.helpers import counted_statements, save_user, transaction

PASSWORD = "a-long-test-password"
# Access checks and argument handling do not depend on the database: SQLite only.
sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
PAGES = ("/admin/", "/admin/overview", "/admin/policy")
_TOKEN = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')


# --- helpers --------------------------------------------------------------------------------


def token_of(client: FlaskClient, path: str = "/admin/login") -> str:
    found = _TOKEN.search(client.get(path).get_data(as_text=True))
    assert found, f"no CSRF token on {path}"
    return found.group(1)


def log_in(
    client: FlaskClient, name: str = "olivia", password: str = PASSWORD, **extra: str
) -> TestResponse:
    token = token_of(client)
    return client.post(
        "/admin/login", data={"csrf_token": token, "name": name, "password": password, **extra}
    )


@pytest.fixture(autouse=True)
def _cheap_password_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    # scrypt takes ~0.15 s a hash; tests create and check many. The checks read the method
    # from the stored hash, so the login code under test is unchanged.
    cheap = functools.partial(generate_password_hash, method="pbkdf2:sha256:1000")
    monkeypatch.setattr("app.core.users.generate_password_hash", cheap)


@pytest.fixture
def users(app: Flask) -> None:
    save_user(app, "olivia", "operator", PASSWORD)
    save_user(app, "victor", "viewer", PASSWORD)


@pytest.fixture
def operator(client: FlaskClient, users: None) -> FlaskClient:
    assert log_in(client).status_code == 302
    return client


@pytest.fixture
def viewer(client: FlaskClient, users: None) -> FlaskClient:
    assert log_in(client, "victor").status_code == 302
    return client


def feed(client: FlaskClient, items: list[dict[str, Any]]) -> None:
    response = client.post(
        f"/callbacks/{CALLBACK_TOKEN}", data=json.dumps(items), content_type="application/json"
    )
    assert response.status_code == 202, response.get_data(as_text=True)


def recent_ms() -> int:
    """Ten minutes ago, in the Runner's epoch milliseconds: inside the policy's deadline."""
    return int(dt.datetime.now(dt.UTC).timestamp() * 1000) - 600_000


def execution_id(n: int) -> str:
    return f"{n:08d}-0000-4000-8000-000000000000"


def seed_failures(client: FlaskClient, first: int, count: int) -> None:
    """`count` executions over three jobs and two accounts, each with a failed run."""
    start = int(dt.datetime.now(dt.UTC).timestamp() * 1000) - 3_600_000
    for n in range(first, first + count):
        feed(
            client,
            failing_run_events(
                start + n * 10_000,
                ("web2", "web3") if n % 2 else ("web3",),
                prefix=f"x{n}-",
                execution_id=execution_id(n),
                job_id=f"job-{n % 3}",
                account=("ACME", "OPS")[n % 2],
            ),
        )


def send_pending_restarts(app: Flask, execution: str) -> None:
    """Play the dispatcher (off in tests): every pending restart went out and was accepted."""
    now = dt.datetime.now(dt.UTC)
    with transaction(app) as session:
        pk = session.scalar(select(Execution.id).where(Execution.execution_id == execution))
        for restart in session.scalars(
            select(Restart).where(Restart.execution_pk == pk, Restart.state == "pending")
        ):
            restart.state, restart.sent_at, restart.outcome = "done", now, "sent"
            for status in (503, 200):
                session.add(
                    RestartAttempt(
                        restart_id=restart.id,
                        worker="w1",
                        status_code=status,
                        outcome="sent" if status == 200 else "retry",
                    )
                )


def seed_restarted(client: FlaskClient, app: Flask, runs: int) -> None:
    """The feed's execution failing `runs` times, each failure restarted by the policy."""
    start = int(dt.datetime.now(dt.UTC).timestamp() * 1000) - 3_600_000
    for run in range(runs):
        feed(client, failing_run_events(start + run * 60_000, prefix=f"run{run}-"))
        send_pending_restarts(app, EXECUTION_ID)


def restarts_of(app: Flask, execution: str = EXECUTION_ID) -> list[Restart]:
    with transaction(app) as session:
        return list(
            session.scalars(
                select(Restart)
                .join(Execution, Execution.id == Restart.execution_pk)
                .where(Execution.execution_id == execution)
                .order_by(Restart.id)
            )
        )


def audit(app: Flask) -> list[tuple[str, str, str]]:
    with transaction(app) as session:
        return [
            (a.actor, a.action, a.target)
            for a in session.scalars(select(AuditEntry).order_by(AuditEntry.id))
        ]


def queries_for(app: Flask, client: FlaskClient, path: str) -> int:
    with counted_statements(get_runtime(app).engine) as statements:
        response = client.get(path)
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    return len(statements)


# --- signing in -------------------------------------------------------------------------------


@sqlite_only
@pytest.mark.parametrize(
    "path",
    [*PAGES, f"/admin/executions/{EXECUTION_ID}", "/admin/pause", "/admin/restarts/1/cancel"],
)
def test_every_page_needs_a_login(client: FlaskClient, path: str) -> None:
    response = client.get(path)

    assert response.status_code == 302
    assert response.location.startswith("/admin/login?next=")
    assert client.post("/admin/logout").location == "/admin/login"


@sqlite_only
def test_a_live_refresh_after_the_session_ended_sends_htmx_to_the_login(
    client: FlaskClient,
) -> None:
    response = client.get("/admin/?status=FAILURE", headers={"HX-Request": "true"})

    assert response.status_code == 401
    assert response.headers["HX-Redirect"] == "/admin/login"


@sqlite_only
def test_log_in_and_out(client: FlaskClient, users: None) -> None:
    wrong = log_in(client, password="not-the-password")
    assert wrong.status_code == 200
    assert "Wrong user name or password." in wrong.get_data(as_text=True)
    unknown = log_in(client, name="mallory")
    assert "Wrong user name or password." in unknown.get_data(as_text=True)

    response = log_in(client)
    assert (response.status_code, response.location) == (302, "/admin/")
    page = client.get("/admin/").get_data(as_text=True)
    assert "olivia" in page and "operator" in page

    token = token_of(client, "/admin/")
    out = client.post("/admin/logout", data={"csrf_token": token})
    assert out.location == "/admin/login"
    assert client.get("/admin/").status_code == 302


@sqlite_only
def test_session_cookie_is_http_only_same_site_and_secure(
    make_app: Callable[..., Flask],
) -> None:
    app = make_app(secure_cookies=True)
    save_user(app, "olivia", "operator", PASSWORD)
    client = app.test_client()

    response = log_in(client)

    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" in cookie


@sqlite_only
def test_login_without_a_csrf_token_is_refused(client: FlaskClient, users: None) -> None:
    response = client.post("/admin/login", data={"name": "olivia", "password": PASSWORD})

    assert response.status_code == 400
    assert "CSRF" in response.get_data(as_text=True)
    assert client.get("/admin/").status_code == 302


@sqlite_only
def test_a_changed_password_ends_existing_sessions(app: Flask, operator: FlaskClient) -> None:
    assert operator.get("/admin/").status_code == 200

    save_user(app, "olivia", "operator", "another-long-password")

    assert operator.get("/admin/").status_code == 302


@sqlite_only
@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/admin/overview", "/admin/overview"),
        ("/admin/executions/abc?events=x#events", "/admin/executions/abc?events=x#events"),
        ("//evil.example/admin/", "/admin/"),
        ("https://evil.example/admin/", "/admin/"),
        ("http:/admin/", "/admin/"),
        ("/\\evil.example/admin/", "/admin/"),
        ("\\\\evil.example", "/admin/"),
        ("/admin/\\..\\evil", "/admin/"),
        ("javascript:alert(1)", "/admin/"),
        ("/admin/\r\nLocation: https://evil.example", "/admin/"),
        ("/api/v1/executions", "/admin/"),
        ("/admin/login?next=//evil.example", "/admin/"),
        ("", "/admin/"),
    ],
)
def test_next_only_leads_inside_the_admin_ui(app: Flask, target: str, expected: str) -> None:
    with app.test_request_context("/admin/login"):
        assert safe_next(target) == expected


@sqlite_only
def test_login_follows_a_local_next_and_refuses_another_site(
    client: FlaskClient, users: None
) -> None:
    assert log_in(client, next="//evil.example/").location == "/admin/"
    token = token_of(client, "/admin/")
    client.post("/admin/logout", data={"csrf_token": token})

    assert log_in(client, next="/admin/policy?execution_id=x").location == (
        "/admin/policy?execution_id=x"
    )


# --- roles and CSRF ---------------------------------------------------------------------------


def test_a_viewer_sees_but_cannot_act(app: Flask, viewer: FlaskClient) -> None:
    seed_failures(viewer, 1, 1)
    detail = viewer.get(f"/admin/executions/{execution_id(1)}").get_data(as_text=True)
    assert "signed in as a viewer" in detail
    assert 'data-test="restart"' not in detail
    (pending,) = restarts_of(app, execution_id(1))
    token = token_of(viewer, "/admin/")

    refused = [
        viewer.get(f"/admin/executions/{execution_id(1)}/restart"),
        viewer.post(
            f"/admin/executions/{execution_id(1)}/restart",
            data={"csrf_token": token, "hosts": "web3"},
        ),
        viewer.get(f"/admin/restarts/{pending.id}/cancel"),
        viewer.post(f"/admin/restarts/{pending.id}/cancel", data={"csrf_token": token}),
        viewer.get("/admin/pause"),
        viewer.post("/admin/pause", data={"csrf_token": token}),
        viewer.post("/admin/resume", data={"csrf_token": token}),
    ]

    assert [r.status_code for r in refused] == [403] * len(refused)
    assert "Only operators can restart executions" in refused[0].get_data(as_text=True)
    assert [r.state for r in restarts_of(app, execution_id(1))] == ["pending"]
    with transaction(app) as session:
        assert session.scalars(select(Pause)).all() == []


@sqlite_only
def test_actions_without_a_csrf_token_are_refused(app: Flask, operator: FlaskClient) -> None:
    seed_failures(operator, 1, 1)
    (pending,) = restarts_of(app, execution_id(1))

    responses = [
        operator.post(f"/admin/restarts/{pending.id}/cancel"),
        operator.post(f"/admin/restarts/{pending.id}/cancel", data={"csrf_token": "forged"}),
        operator.post("/admin/pause", data={"job": "job-1"}),
        operator.post("/admin/logout"),
    ]

    assert [r.status_code for r in responses] == [400] * len(responses)
    assert "could not be accepted" in responses[0].get_data(as_text=True)
    assert [r.state for r in restarts_of(app, execution_id(1))] == ["pending"]
    assert operator.get("/admin/").status_code == 200  # still signed in


@sqlite_only
def test_callbacks_need_no_csrf_token(client: FlaskClient) -> None:
    feed(client, failing_run_events(recent_ms()))


# --- actions ----------------------------------------------------------------------------------


def test_cancel_then_restart_chosen_hosts(app: Flask, operator: FlaskClient) -> None:
    feed(operator, failing_run_events(recent_ms()))
    (automatic,) = restarts_of(app)
    detail_url = f"/admin/executions/{EXECUTION_ID}"
    token = token_of(operator, detail_url)

    confirm = operator.get(f"/admin/restarts/{automatic.id}/cancel")
    assert confirm.status_code == 200 and "Cancel restart" in confirm.get_data(as_text=True)
    cancelled = operator.post(f"/admin/restarts/{automatic.id}/cancel", data={"csrf_token": token})
    assert cancelled.location == f"{detail_url}#restarts"

    offered = operator.get(f"{detail_url}/restart").get_data(as_text=True)
    assert re.search(r'value="web2" checked', offered) and re.search(
        r'value="web3" checked', offered
    )
    review = operator.get(f"{detail_url}/restart?picked=1&hosts=web2").get_data(as_text=True)
    assert re.search(r'value="web2" checked', review)
    assert not re.search(r'value="web3" checked', review)
    queued = operator.post(
        f"{detail_url}/restart",
        data={"csrf_token": token, "hosts": ["web2"], "note": "INC-7"},
        follow_redirects=True,
    )

    page = queued.get_data(as_text=True)
    assert "Restart queued (web2)" in page
    assert "manual by olivia" in page
    first, manual = restarts_of(app)
    assert (first.state, first.cancelled_by) == ("cancelled", "olivia")
    assert (manual.state, manual.manual, manual.hosts) == ("pending", True, ["web2"])
    assert [a[:2] for a in audit(app) if a[1] != "login"] == [
        ("olivia", "cancel"),
        ("olivia", "restart"),
    ]

    again = operator.post(
        f"{detail_url}/restart",
        data={"csrf_token": token, "hosts": ["web3"]},
        follow_redirects=True,
    )
    assert "already pending" in again.get_data(as_text=True)
    assert len(restarts_of(app)) == 2


@sqlite_only
@pytest.mark.parametrize(
    ("hosts", "message"),
    [([], "Choose at least one host."), (["db9"], "is not a valid choice")],
)
def test_restart_needs_hosts_among_the_failed_ones(
    app: Flask, operator: FlaskClient, hosts: list[str], message: str
) -> None:
    feed(operator, failing_run_events(recent_ms()))
    (automatic,) = restarts_of(app)
    token = token_of(operator, "/admin/")
    operator.post(f"/admin/restarts/{automatic.id}/cancel", data={"csrf_token": token})

    response = operator.post(
        f"/admin/executions/{EXECUTION_ID}/restart", data={"csrf_token": token, "hosts": hosts}
    )

    assert response.status_code == 422
    assert message in response.get_data(as_text=True)
    assert [r.state for r in restarts_of(app)] == ["cancelled"]


def test_pause_and_resume_a_job_and_everything(app: Flask, operator: FlaskClient) -> None:
    feed(operator, failing_run_events(recent_ms()))
    token = token_of(operator, "/admin/")
    detail_url = f"/admin/executions/{EXECUTION_ID}"

    assert "Pause automatic restarts for job" in operator.get(
        f"/admin/pause?job={JOB_ID}&next={detail_url}"
    ).get_data(as_text=True)
    paused = operator.post(
        "/admin/pause",
        data={"csrf_token": token, "job": JOB_ID, "reason": "vendor outage", "next": detail_url},
    )
    assert paused.location == detail_url
    assert "paused for this job" in operator.get(detail_url).get_data(as_text=True)

    everything = operator.post(
        "/admin/pause",
        data={"csrf_token": token, "next": "//evil.example"},
        follow_redirects=True,
    )
    assert "Automatic restarts paused for every job" in everything.get_data(as_text=True)
    assert "paused for every job" in operator.get("/admin/").get_data(as_text=True)
    with transaction(app) as session:
        assert sorted(p.job_id for p in session.scalars(select(Pause))) == ["", JOB_ID]

    for job in (JOB_ID, ""):
        operator.post("/admin/resume", data={"csrf_token": token, "job": job})
    twice = operator.post(
        "/admin/resume", data={"csrf_token": token}, follow_redirects=True
    ).get_data(as_text=True)
    assert "were not paused" in twice
    with transaction(app) as session:
        assert session.scalars(select(Pause)).all() == []
    assert [a[1:] for a in audit(app) if a[1] != "login"] == [
        ("pause", f"job {JOB_ID}"),
        ("pause", "global"),
        ("resume", f"job {JOB_ID}"),
        ("resume", "global"),
    ]


# --- pages ------------------------------------------------------------------------------------


def test_pages_render_for_an_empty_database(operator: FlaskClient) -> None:
    for path in PAGES:
        response = operator.get(path)
        assert response.status_code == 200, path
    assert "No executions yet" in operator.get("/admin/").get_data(as_text=True)
    missing = operator.get("/admin/executions/nope")
    assert missing.status_code == 404 and "no execution" in missing.get_data(as_text=True)
    explained = operator.get("/admin/policy?execution_id=nope")
    assert explained.status_code == 404 and "no execution" in explained.get_data(as_text=True)


def test_pages_render_for_a_seeded_database(app: Flask, operator: FlaskClient) -> None:
    seed_failures(operator, 1, 6)
    seed_restarted(operator, app, 3)
    feed(operator, [feed_event("playbook_on_start", recent_ms(), execution_id="running-1")])

    for path in (
        *PAGES,
        "/admin/?status=FAILURE",
        "/admin/?account=OPS&job=job-1",
        "/admin/?host=web2&pending=y",
        "/admin/?q=0000000",
        f"/admin/executions/{EXECUTION_ID}",
        f"/admin/executions/{execution_id(2)}",
        "/admin/executions/running-1",
        f"/admin/policy?execution_id={EXECUTION_ID}",
        f"/admin/executions/{execution_id(2)}/restart",
        "/admin/pause?job=job-1&next=/admin/",
        "/admin/resume",
    ):
        response = operator.get(path)
        assert response.status_code == 200, (path, response.get_data(as_text=True)[:300])

    listed = operator.get("/admin/?status=FAILURE&account=ACME").get_data(as_text=True)
    rows = re.findall(r'<tr data-execution="([^"]+)"', listed)
    assert rows and all(int(r[:8]) % 2 == 0 for r in rows if r != EXECUTION_ID)
    detail = operator.get(f"/admin/executions/{EXECUTION_ID}").get_data(as_text=True)
    assert detail.count('class="bar bar-') == 3
    assert re.search(r'<time datetime="[0-9T:.-]+Z" title="[0-9 :-]+UTC"', detail)
    assert ">503<" in detail and ">200<" in detail  # the Runner's answers to each restart call
    explained = operator.get(f"/admin/policy?execution_id={EXECUTION_ID}").get_data(as_text=True)
    assert "Checks" in explained and "max_restarts" in explained


@sqlite_only
def test_a_refused_policy_edit_is_shown_with_its_errors(
    operator: FlaskClient, policy_file: Path
) -> None:
    in_force = operator.get("/admin/policy").get_data(as_text=True)
    version = re.search(r'<code title="sha256 of the policy text">(\w+)</code>', in_force)
    assert version and "edit was refused" not in in_force

    policy_file.write_text("version: 1\ndefaults:\n  action: explode\n")
    page = operator.get("/admin/policy").get_data(as_text=True)

    assert "The policy file was edited and the edit was refused." in page  # on every page
    assert f"{policy_file}:3:" in page  # file:line: message
    assert version.group(0) in page  # the last good version stays in force
    assert "edit was refused" in operator.get("/admin/").get_data(as_text=True)


@sqlite_only
def test_bad_list_arguments_are_answered_as_pages(operator: FlaskClient) -> None:
    bad_status = operator.get("/admin/?status=EXPLODED")
    assert bad_status.status_code == 302 and bad_status.location == "/admin/"
    bad_cursor = operator.get("/admin/?cursor=not-a-cursor")
    assert bad_cursor.status_code == 400
    assert "<html" in bad_cursor.get_data(as_text=True)


def test_the_list_pages_with_a_cursor_and_keeps_its_filters(
    app: Flask, operator: FlaskClient
) -> None:
    app.config["ADMIN_PAGE_SIZE"] = 2
    seed_failures(operator, 1, 6)  # ACME: executions 2, 4 and 6

    first = operator.get("/admin/?account=ACME").get_data(as_text=True)
    older = re.search(r'href="(/admin/\?[^"]*cursor=[^"]+)" rel="next"', first)
    assert older and "account=ACME" in older.group(1)
    second = operator.get(older.group(1).replace("&amp;", "&")).get_data(as_text=True)

    seen = re.findall(r'<tr data-execution="([^"]+)"', first) + re.findall(
        r'<tr data-execution="([^"]+)"', second
    )
    assert len(seen) == len(set(seen)) == 3
    assert all(int(s[:8]) % 2 == 0 for s in seen)


@sqlite_only
def test_live_refresh_returns_the_table_with_the_same_filters(operator: FlaskClient) -> None:
    seed_failures(operator, 1, 2)

    partial = operator.get("/admin/?status=FAILURE&host=web3", headers={"HX-Request": "true"})

    body = partial.get_data(as_text=True)
    assert "<html" not in body
    assert 'hx-get="/admin/?status=FAILURE&amp;host=web3"' in body
    assert 'id="summary"' in body and 'hx-swap-oob="true"' in body
    assert "HX-Request" in partial.headers["Vary"]


@sqlite_only
def test_pages_carry_security_headers_and_no_outside_urls(
    app: Flask, operator: FlaskClient
) -> None:
    seed_restarted(operator, app, 2)
    for path in (*PAGES, f"/admin/executions/{EXECUTION_ID}", "/admin/login"):
        response = operator.get(path)
        assert "default-src 'self'" in response.headers["Content-Security-Policy"]
        assert response.headers["X-Frame-Options"] == "DENY"
        assert response.headers["Cache-Control"] == "no-store"
        assert not re.search(r"(src|href|action)=\"(https?:)?//", response.get_data(as_text=True))


# --- queries per page -------------------------------------------------------------------------


@pytest.mark.parametrize("path", [*PAGES, "/admin/?status=FAILURE&pending=y"])
def test_list_pages_use_the_same_number_of_queries_for_more_executions(
    app: Flask, operator: FlaskClient, path: str
) -> None:
    seed_failures(operator, 1, 2)
    few = queries_for(app, operator, path)

    seed_failures(operator, 3, 12)
    many = queries_for(app, operator, path)

    assert few == many
    assert many <= 20


def test_detail_pages_use_the_same_number_of_queries_for_longer_histories(
    app: Flask, operator: FlaskClient
) -> None:
    seed_failures(operator, 1, 1)
    seed_restarted(operator, app, 4)  # 4 runs, 4 decisions, 4 restarts, 8 calls, 40 events

    short = queries_for(app, operator, f"/admin/executions/{execution_id(1)}")
    long = queries_for(app, operator, f"/admin/executions/{EXECUTION_ID}")
    short_explain = queries_for(app, operator, f"/admin/policy?execution_id={execution_id(1)}")
    long_explain = queries_for(app, operator, f"/admin/policy?execution_id={EXECUTION_ID}")

    assert short == long
    assert short_explain == long_explain
    assert long <= 16  # 15, and one for the failed hosts' quarantine (the restart choice)


# --- the overview's figures -------------------------------------------------------------------


def test_quarantined_hosts_agree_with_the_policy_engine(app: Flask) -> None:
    limit = HostLimit(failures=3, window=dt.timedelta(hours=2), quarantine=dt.timedelta(hours=1))
    now = dt.datetime(2026, 5, 1, 12, 0, tzinfo=dt.UTC)
    minutes = {
        "burst-now": [1, 5, 9],  # three within 2 h, the last 1 min ago: held
        "burst-old": [200, 205, 210],  # three within 2 h, but over an hour ago: released
        "spread": [10, 130, 250],  # never three within 2 h: never held
        "edge": [59, 100, 170],  # third failure 59 min ago with the first 70 min before it
        "two": [1, 2],  # too few
        "many": list(range(0, 400, 25)),  # every 25 min: always held
        "future": [-30, 1, 2],  # a failure after now does not count
    }
    random.seed(7)
    minutes["noise"] = sorted(random.sample(range(-60, 300), 12))
    with transaction(app) as session:
        pk = session.scalar(
            insert(Execution)
            .values(execution_id="q", status="FAILURE", failed_hosts=[])
            .returning(Execution.id)
        )
        for host, ago in minutes.items():
            session.execute(
                insert(HostFailure),
                [
                    {
                        "execution_pk": pk,
                        "run_index": run,
                        "host": host,
                        "failure_class": "unreachable",
                        "occurred_at": now - dt.timedelta(minutes=m),
                    }
                    for run, m in enumerate(ago)
                ],
            )

    with transaction(app) as session:
        found = {q.host: q.until for q in quarantined_hosts(session, limit, now)}

    expected = {}
    for host, ago in minutes.items():
        until = quarantined_until(limit, [now - dt.timedelta(minutes=m) for m in ago], now)
        if until is not None:
            expected[host] = until
    assert found == expected
    assert {"burst-now", "many", "edge"} <= set(found)
    assert not {"burst-old", "spread", "two"} & set(found)


def test_every_page_names_an_icon_that_is_served(client: FlaskClient) -> None:
    # Without one, browsers ask for /favicon.ico on every page and log the 404.
    page = client.get("/admin/login").get_data(as_text=True)
    href = page.split('<link rel="icon" type="image/svg+xml" href="')[1].split('"')[0]

    with client.get(href) as icon:
        assert icon.status_code == 200 and icon.mimetype == "image/svg+xml"
        assert icon.get_data(as_text=True).startswith("<svg")


def test_the_restart_choice_says_which_hosts_are_quarantined(
    app: Flask, operator: FlaskClient, policy_file: Path
) -> None:
    # One failure holds a host for an hour: the automatic decision leaves both out; an
    # operator may still restart them, and is told they are held, and until when.
    policy_file.write_text(
        "version: 1\ndefaults:\n  backoff: {initial: 0s}\n"
        "limits:\n  per_host: {failures: 1, window: 1h, quarantine: 1h}\n"
    )
    feed(operator, failing_run_events(recent_ms()))
    assert restarts_of(app) == []  # every failed host is quarantined: nothing automatic
    detail_url = f"/admin/executions/{EXECUTION_ID}"

    detail = operator.get(detail_url).get_data(as_text=True)
    confirm = operator.get(f"{detail_url}/restart").get_data(as_text=True)

    for page in (detail, confirm):
        assert page.count('data-test="quarantined"') == 2
        assert "quarantined until" in page
    assert re.search(r'value="web2" checked', confirm)  # still offered: the operator decides


def test_the_explanation_marks_the_check_that_decides(
    operator: FlaskClient, policy_file: Path
) -> None:
    policy_file.write_text(
        "version: 1\nrules:\n  - name: hands-off\n    when: {job: '*'}\n    action: skip\n"
    )
    feed(operator, failing_run_events(recent_ms()))

    page = operator.get(f"/admin/policy?execution_id={EXECUTION_ID}").get_data(as_text=True)

    assert page.count('data-test="decided-here"') == 1
    marker = page.split('data-test="decided-here"')[1]
    assert "<code>rule_skip</code> decides" in marker.split("</li>")[0]
    assert "max_restarts" in marker  # the later checks are still listed
