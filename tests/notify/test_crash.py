"""A notifier process killed mid-send, after the receiver took the message and before the
answer was recorded, on SQLite and PostgreSQL: another notifier sends it again once the lease
runs out, with the same `webhook-id`, and the receiver's de-duplication acts on it once."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from app.core.operator import pause_automatic
from app.db import transaction, utcnow
from tests.dispatcher.conftest import PROJECT
from tests.notify.conftest import Receivers, deliver_due, notifications
from tests.notify.receivers import wait_for

NOTIFIER = """
import sys
from app.config import load_settings
from app.dispatcher.notifier import Notifier
from app.runtime import Runtime

runtime = Runtime.from_settings(load_settings(instance_path=sys.argv[1]))
Notifier(runtime, name="doomed").run_once()
"""


def test_a_notifier_killed_mid_send_causes_no_second_message(
    sessions: sessionmaker[Session],
    receivers: Receivers,
    database_url: str,
    policy_file: Path,
    tmp_path: Path,
) -> None:
    policy_file.write_text("version: 1\n" + receivers.notify_yaml())
    policy = receivers.policy(body="version: 1\n")
    now = utcnow()
    with transaction(sessions) as session:
        pause_automatic(session, None, "olivia", now, None, policy)
    receivers.hook.hold(1)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RESPAWN_")}
    env.update(
        RESPAWN_DATABASE_URL=database_url,
        RESPAWN_SECRET_KEY="notifier-test-secret-key-0123456789abcdef",
        RESPAWN_CALLBACK_TOKENS="callback-token-0123456789",
        RESPAWN_POLICY_FILE=str(policy_file),
        RESPAWN_LOG_LEVEL="WARNING",
        PYTHONPATH=str(PROJECT),
    )
    process = subprocess.Popen(
        [sys.executable, "-c", NOTIFIER, str(tmp_path / "instance")],
        cwd=PROJECT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        # The receiver took the message in; the notifier waits for its answer. Kill it there.
        wait_for(lambda: receivers.hook.requests("/hook"), "the message taken in", timeout=60)
        process.send_signal(signal.SIGKILL)
        process.wait(10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        assert process.stderr is not None
        process.stderr.close()

    (row,) = notifications(sessions)
    assert (row.state, row.lease_owner, row.attempts) == ("sending", "doomed", 1)
    # Within its lease nobody else sends it; once the lease ran out, another notifier does.
    assert deliver_due(sessions, policy, utcnow(), worker="survivor") == []
    assert row.lease_expires_at is not None
    later = row.lease_expires_at + dt.timedelta(seconds=1)
    assert deliver_due(sessions, policy, later, worker="survivor") == ["sent"]

    (row,) = notifications(sessions)
    assert (row.state, row.attempts, row.lease_owner) == ("sent", 2, None)
    got = receivers.hook.requests("/hook")
    assert [r.webhook_id for r in got] == [row.key, row.key]
    assert [r.repeat for r in got] == [False, True] and all(r.verified for r in got)
    assert len(receivers.hook.unique()) == 1
