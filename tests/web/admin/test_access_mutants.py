"""The admin UI's access checks at their edges: the login throttle, `next` targets, roles.

These tests kill the mutants of app/web/admin/auth.py and of the access functions of
app/web/admin/views.py that the admin tests leave alive (docs/TESTING.md).
"""

from __future__ import annotations

import html
import re

import pytest
from flask import Flask
from flask.testing import FlaskClient

from app.web.admin.auth import AddressThrottle, AdminUser
from app.web.admin.views import safe_next
from tests.helpers import save_user

sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
PASSWORD = "a-long-test-password"
_TOKEN = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def throttle(limit: int = 3, window: float = 60.0) -> tuple[AddressThrottle, Clock]:
    clock = Clock()
    return AddressThrottle(limit, window, clock), clock


def test_an_address_may_fail_up_to_the_limit_before_it_waits() -> None:
    guard, clock = throttle()
    for _ in range(2):
        guard.failed("10.0.0.1")
        clock.now += 5

    assert guard.wait_seconds("10.0.0.1") == 0.0
    guard.failed("10.0.0.1")  # the third, at 1010
    assert guard.wait_seconds("10.0.0.1") == 50.0  # the first (1000) leaves the window at 1060
    assert guard.wait_seconds("10.0.0.2") == 0.0


def test_failures_leave_the_window_when_it_has_passed() -> None:
    guard, clock = throttle()
    for _ in range(3):
        guard.failed("10.0.0.1")

    clock.now += 59.5
    assert guard.wait_seconds("10.0.0.1") == 0.5
    clock.now += 0.5  # exactly a window after: gone
    assert guard.wait_seconds("10.0.0.1") == 0.0


def test_a_successful_login_forgets_the_addresses_failures() -> None:
    guard, _ = throttle()
    for _ in range(3):
        guard.failed("10.0.0.1")

    guard.succeeded("10.0.0.1")

    assert guard.wait_seconds("10.0.0.1") == 0.0
    guard.succeeded("10.0.0.9")  # unknown: nothing to forget, no error


def test_a_full_table_forgets_the_quiet_addresses_first() -> None:
    guard, clock = throttle(limit=1)
    guard.MAX_ADDRESSES = 2
    guard.failed("old")
    clock.now += 30
    guard.failed("recent")
    clock.now += 31  # "old" has left the window, "recent" has not

    guard.failed("new")

    assert (guard.wait_seconds("recent"), guard.wait_seconds("new")) == (29.0, 60.0)
    assert "old" not in guard._failures


def test_a_full_table_of_active_addresses_drops_the_oldest_entry() -> None:
    guard, _ = throttle(limit=1)
    guard.MAX_ADDRESSES = 2
    guard.failed("first")
    guard.failed("second")

    guard.failed("third")

    assert list(guard._failures) == ["second", "third"]
    guard.failed("second")  # known already: nothing is dropped
    assert list(guard._failures) == ["second", "third"]


def test_an_address_failing_exactly_a_window_ago_is_quiet_and_forgotten_first() -> None:
    guard, clock = throttle(limit=5)
    guard.MAX_ADDRESSES = 2
    clock.now = 990.0
    guard.failed("active")
    clock.now = 1000.0
    guard.failed("edge")
    clock.now = 1030.0
    guard.failed("active")
    clock.now = 1060.0  # "edge" failed exactly a window ago; "active" 30 s ago

    guard.failed("new")

    assert list(guard._failures) == ["active", "new"]


def test_only_the_operator_role_may_act() -> None:
    operator = AdminUser(7, "olivia", "operator", "fp")
    viewer = AdminUser(8, "victor", "viewer", "fp")

    assert (operator.is_operator, viewer.is_operator) == (True, False)
    assert operator.get_id() == "7:fp"


@sqlite_only
@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/admin", "/admin"),
        ("/admin/" + "x" * 2041, "/admin/" + "x" * 2041),  # 2048 characters: kept
        ("/admin/" + "x" * 2042, "/admin/"),  # 2049: too long
        ("/admin/a b", "/admin/"),
        ("/admin/a\x7fb", "/admin/"),
        ("/admin/a!b", "/admin/a!b"),
        ("/administrator", "/admin/"),
        ("/admin/login", "/admin/"),
        ("///admin/", "/admin/"),  # a browser reads "///admin/" as the host "admin"
        (None, "/admin/"),
    ],
)
def test_next_targets_at_the_edges(app: Flask, target: str | None, expected: str) -> None:
    with app.test_request_context("/admin/login"):
        assert safe_next(target) == expected


@sqlite_only
def test_a_viewer_is_told_how_to_become_an_operator(client: FlaskClient, app: Flask) -> None:
    save_user(app, "victor", "viewer", PASSWORD)
    token = _TOKEN.search(client.get("/admin/login").get_data(as_text=True))
    assert token is not None
    client.post(
        "/admin/login",
        data={"csrf_token": token.group(1), "name": "victor", "password": PASSWORD},
    )

    refused = client.get("/admin/pause")

    assert refused.status_code == 403
    page = html.unescape(refused.get_data(as_text=True))
    assert "You are signed in as victor, a viewer; ask an operator, or an admin" in page
    assert "to run `respawn user add NAME --role operator`." in page
