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

from app.web.admin.auth import AdminUser
from app.web.admin.views import safe_next
from tests.helpers import save_user

sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
PASSWORD = "a-long-test-password"
_TOKEN = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')


def test_only_the_operator_role_may_act() -> None:
    operator = AdminUser(7, "olivia", "operator", 0, "fp")
    viewer = AdminUser(8, "victor", "viewer", 0, "fp")

    assert (operator.is_operator, viewer.is_operator) == (True, False)
    assert operator.get_id() == "7:0:fp"


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
