"""The Runner job service client (docs/runner.md)."""

from app.runner.client import RunnerClient
from app.runner.errors import (
    RunnerAuthError,
    RunnerBadResponse,
    RunnerError,
    RunnerNotFound,
    RunnerRejected,
    RunnerTimeout,
    RunnerUnavailable,
)
from app.runner.paging import iter_pages, parse_page
from app.runner.resources import JobCallback, Page, RestartHost, RunnerJob
from app.runner.wire import jwt_expiry

__all__ = [
    "JobCallback",
    "Page",
    "RestartHost",
    "RunnerAuthError",
    "RunnerBadResponse",
    "RunnerClient",
    "RunnerError",
    "RunnerJob",
    "RunnerNotFound",
    "RunnerRejected",
    "RunnerTimeout",
    "RunnerUnavailable",
    "iter_pages",
    "jwt_expiry",
    "parse_page",
]
