"""The Runner client as the settings configure it: one shared HTTP session per process."""

from __future__ import annotations

from collections.abc import Callable

import requests

from app.config import Settings
from app.runner.client import RunnerClient


def make_runner_client(
    settings: Settings, on_note: Callable[[str, str], None] | None = None
) -> RunnerClient | None:
    """The Runner client from the settings, or None when no credentials are configured."""
    if not settings.runner_configured:
        return None
    session = requests.Session()
    session.headers["User-Agent"] = "respawn"
    return RunnerClient(
        session,
        settings.runner_api_url,
        settings.runner_auth_url,
        settings.runner_username,
        settings.runner_password,
        token=settings.runner_token,
        connect_timeout=settings.runner_connect_timeout,
        read_timeout=settings.runner_read_timeout,
        on_note=on_note,
    )
