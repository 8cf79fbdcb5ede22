"""Planted secrets (a webhook's signing secret, a Slack incoming-webhook URL, an SMTP password)
used for real against the receivers, refused and echoed back by them, never appear in the
database, the logs, the admin pages or the CLI's output; on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from flask import Flask
from sqlalchemy import select
from werkzeug.security import generate_password_hash

from app.cli import main
from app.db import Base, utcnow
from app.dispatcher import notifier as notifier_module
from app.dispatcher.notifier import Notifier
from app.extensions import get_runtime
from app.logging_setup import RedactingFormatter
from app.models import Notification
from tests import helpers
from tests.conftest import CALLBACK_TOKEN
from tests.feed import failing_run_events, ms
from tests.helpers import save_user, sign_in, transaction
from tests.notify.conftest import (
    PLANTED,
    PUBLIC_URL,
    SLACK_PATH,
    SMTP_PASSWORD,
    SMTP_USER,
    WEBHOOK_SECRET,
    Receivers,
)
from tests.notify.test_admin_pages import SKIP_DB

PASSWORD = "a-long-test-password"
SECRET_VARIABLES = ("TEST_WEBHOOK_SECRET", "TEST_SLACK_URL", "TEST_SMTP_PASSWORD")


@pytest.fixture(autouse=True)
def _cheap_password_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    cheap = functools.partial(generate_password_hash, method="pbkdf2:sha256:1000")
    monkeypatch.setattr("app.core.users.generate_password_hash", cheap)


@pytest.fixture
def app_log(capfd: pytest.CaptureFixture[str]) -> Iterator[pytest.CaptureFixture[str]]:
    """The app's own log handler writing to this test's captured stderr: the process's handler
    is set aside (it writes where pytest captures for every test) and put back after."""
    root = logging.getLogger()
    level = root.level
    kept = [h for h in root.handlers if isinstance(h.formatter, RedactingFormatter)]
    for handler in kept:
        root.removeHandler(handler)
    yield capfd
    for handler in root.handlers[:]:
        if isinstance(handler.formatter, RedactingFormatter):
            root.removeHandler(handler)
    for handler in kept:
        root.addHandler(handler)
    root.setLevel(level)


def dump(app: Flask) -> str:
    """Every row of every table, as text."""
    lines = []
    with transaction(app) as session:
        for table in Base.metadata.sorted_tables:
            for row in session.execute(select(table)):
                lines.append(f"{table.name}: {tuple(row)!r}")
    return "\n".join(lines)


def channel_states(app: Flask) -> dict[str, str]:
    with transaction(app) as session:
        return {n.channel: n.state for n in session.scalars(select(Notification))}


def cli_env(policy_file: Path, tmp_path: Path) -> dict[str, str]:
    return helpers.cli_env(
        f"sqlite:///{tmp_path / 'unused.db'}",
        policy_file,
        RESPAWN_LOG_LEVEL="DEBUG",
        **{name: os.environ[name] for name in SECRET_VARIABLES},
    )


def test_planted_secrets_never_leak(
    make_app: Callable[..., Flask],
    policy_file: Path,
    tmp_path: Path,
    receivers: Receivers,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    app_log: pytest.CaptureFixture[str],
) -> None:
    policy_file.write_text(SKIP_DB + receivers.notify_yaml(default="[oncall, chat, mail]"))
    app = make_app(public_url=PUBLIC_URL, log_level="DEBUG")
    save_user(app, "olivia", "operator", PASSWORD)
    operator = app.test_client()
    sign_in(operator, "olivia", PASSWORD)
    caplog.set_level(logging.DEBUG)
    notifier = Notifier(get_runtime(app), name="n1")
    # First the receivers refuse or are away: the mail server wants another password, the
    # webhook answers 500, and the Slack URL (its token in the path) points at a dead port.
    receivers.smtp.users = {SMTP_USER: "another-password"}
    monkeypatch.setenv("TEST_SLACK_URL", "http://127.0.0.1:9" + SLACK_PATH)
    receivers.hook.fail(1, status=500)
    execution = "00000001-0000-4000-8000-000000005ec7"
    items = failing_run_events(
        ms(utcnow()) - 60_000, ("web2",), execution_id=execution, job_id="db-migrate"
    )
    response = operator.post(
        f"/callbacks/{CALLBACK_TOKEN}", data=json.dumps(items), content_type="application/json"
    )
    assert response.status_code == 202
    assert notifier.run_once() == 3
    # An hour later they take them, and echo the secrets back in their answers.
    receivers.smtp.users = {SMTP_USER: SMTP_PASSWORD}
    monkeypatch.setenv("TEST_SLACK_URL", receivers.hook.url + SLACK_PATH)
    receivers.hook.answer = f"got {WEBHOOK_SECRET} via {receivers.hook.url}{SLACK_PATH}"
    monkeypatch.setattr(notifier_module, "utcnow", lambda: utcnow() + dt.timedelta(hours=1))
    assert notifier.run_once() == 2
    assert channel_states(app) == {"oncall": "sent", "chat": "sent", "mail": "failed"}
    env = cli_env(policy_file, tmp_path)
    outputs = [
        CliRunner().invoke(main, ["notify", "test", name], env=env).output
        for name in ("oncall", "chat", "mail")
    ]
    assert outputs[0].startswith("oncall: sent: HTTP 200: got [redacted] via"), outputs[0]
    assert outputs[2].startswith("mail: sent: accepted by")

    pages = "".join(
        operator.get(path).get_data(as_text=True)
        for path in (
            "/admin/notifications",
            f"/admin/executions/{execution}",
            "/admin/policy",
            "/admin/",
        )
    )
    assert "login refused: 535" in pages and "got [redacted] via" in pages
    database = dump(app)
    assert "TEST_SLACK_URL" not in database  # not even the names are stored
    captured = app_log.readouterr()
    assert "POST /hook/oncall" in captured.err  # the app's log did reach stderr
    places = {
        "database": database,
        "logs": caplog.text,
        "stderr": captured.err,
        "stdout": captured.out,
        "pages": pages,
        "cli": "".join(outputs),
    }
    for secret in PLANTED:
        leaks = [where for where, text in places.items() if secret in text]
        assert leaks == [], f"a planted secret leaked into {leaks}"
