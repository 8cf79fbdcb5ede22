"""The admin Insights page over HTTP: who sees it, its pages, and a cost that follows the page."""

from __future__ import annotations

import functools
import re

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.security import generate_password_hash

from app.extensions import get_runtime
from app.web.admin import insights
from bench.plant import plant, planted_patterns
from tests.helpers import counted_statements, save_user
from tests.web.admin.test_admin import PASSWORD, log_in

CARD = re.compile(r'data-test="insight"')


@pytest.fixture(autouse=True)
def _cheap_password_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    cheap = functools.partial(generate_password_hash, method="pbkdf2:sha256:1000")
    monkeypatch.setattr("app.core.users.generate_password_hash", cheap)


@pytest.fixture
def viewer(app: Flask, client: FlaskClient) -> FlaskClient:
    save_user(app, "victor", "viewer", PASSWORD)
    assert log_in(client, "victor").status_code == 302
    return client


def test_a_viewer_sees_an_empty_page_explained(viewer: FlaskClient) -> None:
    page = viewer.get("/admin/insights")

    assert page.status_code == 200
    text = page.get_data(as_text=True)
    assert "No failures with an error signature" in text
    assert 'aria-current="page">Insights' in text


def test_signatures_come_a_page_at_a_time(
    viewer: FlaskClient, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    plant(database_url, planted_patterns(), seed=5)
    monkeypatch.setattr(insights, "PER_PAGE", 3)

    first = viewer.get("/admin/insights").get_data(as_text=True)
    last = viewer.get("/admin/insights?page=3").get_data(as_text=True)
    beyond = viewer.get("/admin/insights?page=9")
    garbled = viewer.get("/admin/insights?page=abc")

    assert len(CARD.findall(first)) == 3
    assert re.search(r"\d+ host restarts?: ", first)  # each host each time, not distinct hosts
    assert "Page 1 of 3" in first and "page=2" in first
    assert len(CARD.findall(last)) == 2
    assert "Page 3 of 3" in last and "page=2" in last
    assert beyond.status_code == 200 and not CARD.findall(beyond.get_data(as_text=True))
    assert len(CARD.findall(garbled.get_data(as_text=True))) == 3


def test_the_page_costs_the_same_queries_for_a_longer_history(
    app: Flask, viewer: FlaskClient, database_url: str
) -> None:
    plant(database_url, planted_patterns(), seed=5)
    viewer.get("/admin/insights")
    with counted_statements(get_runtime(app).engine) as small:
        viewer.get("/admin/insights")

    plant(database_url, planted_patterns(scale=3), seed=6)
    with counted_statements(get_runtime(app).engine) as large:
        answer = viewer.get("/admin/insights")

    assert answer.status_code == 200
    assert len(large) == len(small)
