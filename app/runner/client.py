"""The Runner job service client: login, restart, executions and jobs (docs/runner.md).

One injected `requests.Session`; every call has a `(connect, read)` timeout and ends in a
parsed answer or a typed `RunnerError`. Only safe reads are retried; a restart is sent once
(the dispatcher owns its retries and must know whether the request may have arrived).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import requests

from app import metrics
from app.redact import KNOWN_SECRETS
from app.runner.documents import DocumentError, ExecutionDocument, parse_execution_document
from app.runner.errors import (
    RunnerAuthError,
    RunnerBadResponse,
    RunnerError,
    RunnerNotFound,
    RunnerRejected,
    RunnerTimeout,
    RunnerUnavailable,
    message_from_body,
)
from app.runner.paging import iter_pages, parse_page
from app.runner.resources import (
    Page,
    RestartHost,
    RunnerJob,
    ShapeError,
    parse_job,
    run_body,
)
from app.runner.wire import connection_never_made, jwt_expiry, segment

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_TOKEN_LIFETIME = 14 * 24 * 3600.0  # the documented 2 weeks
MAX_PAGE_SIZE = 100
_RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
_REJECTED_STATUSES = frozenset({400, 409, 422})


def _raw_event(item: Any) -> Mapping[str, Any]:
    if not isinstance(item, Mapping):
        raise RunnerBadResponse("a status event is not an object")
    return item


class RunnerClient:
    """A thread-safe client of the Runner API sharing one token between threads."""

    def __init__(
        self,
        session: requests.Session,
        api_url: str,
        auth_url: str,
        username: str | None,
        password: str | None,
        token: str | None = None,
        connect_timeout: float = 3.05,
        read_timeout: float = 10.0,
        clock: Callable[[], float] = time.time,
        *,
        read_attempts: int = 3,
        retry_backoff: float = 0.2,
        renew_margin: float = 300.0,
        sleep: Callable[[float], None] = time.sleep,
        on_note: Callable[[str, str], None] | None = None,
    ) -> None:
        if not token and not (username and password):
            raise ValueError("the Runner client needs a token or a username and password")
        self._session = session
        self._api_url = api_url.rstrip("/")
        self._auth_url = auth_url
        self._username = username
        self._password = password
        self._timeout = (connect_timeout, read_timeout)
        self._clock = clock
        self._read_attempts = max(1, read_attempts)
        self._retry_backoff = retry_backoff
        self._renew_margin = renew_margin
        self._sleep = sleep
        self._lock = threading.Lock()
        self._token: str | None = token or None
        self._renew_at: float | None = None
        if self._token and self._can_login:
            expiry = jwt_expiry(self._token)
            if expiry is not None:
                self._renew_at = self._renew_time(expiry)
        self.login_count = 0
        # Whatever the Runner might echo back is scrubbed from everything respawn keeps.
        KNOWN_SECRETS.add(password, token)
        self.on_note = on_note
        """Told what respawn found out about this Runner (shown on /readyz)."""
        self.execution_path_unsupported = False

    def __repr__(self) -> str:
        return f"RunnerClient(api_url={self._api_url!r}, username={self._username!r})"

    # -- the calls ---------------------------------------------------------------------

    def restart(
        self,
        account: str,
        job_id: str,
        execution_id: str,
        hosts: Sequence[RestartHost] | None = None,
        ssh_private_key: str | None = None,
        send_by: float | None = None,
    ) -> ExecutionDocument:
        """Restart a failed execution; sent once, never retried here (see RunnerTimeout.sent).

        `send_by` (a `time.monotonic()` value) is the latest moment the request may leave; past
        it the call is refused unsent. A refused token is dropped (the next call logs in) but
        the restart is not sent again here: the caller decides, after checking the execution.
        """
        body = run_body(hosts, ssh_private_key)
        path = self._path("jobs", account, job_id, "executions", execution_id, "restart")
        data = self._call(
            "POST", path, "restart", body=body, idempotent=False, relogin=False, send_by=send_by
        )
        return self._execution(data, "restart")

    def ensure_token(self) -> None:
        """Log in now if the token is missing or due for renewal (before a timed call)."""
        self._current_token()

    def start_job(
        self,
        account: str,
        job_id: str,
        hosts: Sequence[RestartHost] | None = None,
        ssh_private_key: str | None = None,
    ) -> ExecutionDocument:
        """Start a new execution of a job (not retried)."""
        body = run_body(hosts, ssh_private_key)
        path = self._path("jobs", account, job_id, "start")
        data = self._call("POST", path, "start job", body=body, idempotent=False)
        return self._execution(data, "start job")

    def get_execution(self, account: str, job_id: str, execution_id: str) -> ExecutionDocument:
        path = self._path("jobs", account, job_id, "executions", execution_id)
        return self._execution(self._call("GET", path, "get execution"), "get execution")

    def list_job_executions(
        self, account: str, job_id: str, page: int = 0, size: int = MAX_PAGE_SIZE
    ) -> Page[ExecutionDocument]:
        path = self._path("jobs", account, job_id, "executions")
        return self._execution_page(path, "list job executions", page, size)

    def list_account_executions(
        self, account: str, page: int = 0, size: int = MAX_PAGE_SIZE
    ) -> Page[ExecutionDocument]:
        path = self._path("jobs", account, "executions")
        return self._execution_page(path, "list account executions", page, size)

    def iter_job_executions(
        self, account: str, job_id: str, size: int = MAX_PAGE_SIZE, max_pages: int = 1000
    ) -> Iterator[ExecutionDocument]:
        return iter_pages(
            lambda page: self.list_job_executions(account, job_id, page, size), max_pages
        )

    def iter_account_executions(
        self, account: str, size: int = MAX_PAGE_SIZE, max_pages: int = 1000
    ) -> Iterator[ExecutionDocument]:
        return iter_pages(lambda page: self.list_account_executions(account, page, size), max_pages)

    def lookup_execution(
        self, account: str, job_id: str, execution_id: str, max_pages: int = 20
    ) -> ExecutionDocument:
        """The execution, checked before and after a restart (docs/runner.md).

        Its own path (`GET .../executions/{id}`) is known from one SDK only. A 404 there is
        confirmed in the job's executions list before it means "gone"; when the list shows
        the execution, the path is taken as unsupported and the list answers from then on
        (noted once in the log and on /readyz). RunnerNotFound when the list lacks it too.
        """
        if not self.execution_path_unsupported:
            try:
                return self.get_execution(account, job_id, execution_id)
            except RunnerNotFound:
                pass
        found = self.find_in_job_executions(account, job_id, execution_id, max_pages)
        if found is None:
            raise RunnerNotFound(
                "the execution is in neither its own path nor the job's executions list",
                status_code=404,
                operation="look up execution",
            )
        if not self.execution_path_unsupported:
            self.execution_path_unsupported = True
            text = "GET .../executions/{id} answers 404: verifying executions by listing"
            log.warning("Runner: %s", text)
            self._note("execution_path", text)
        return found

    def find_in_job_executions(
        self, account: str, job_id: str, execution_id: str, max_pages: int = 20
    ) -> ExecutionDocument | None:
        for document in self.iter_job_executions(account, job_id, max_pages=max_pages):
            if document.execution_id == execution_id:
                return document
        return None

    def status_events(
        self, account: str, job_id: str, execution_id: str, max_pages: int = 20
    ) -> list[Mapping[str, Any]]:
        """An execution's status events from the status API, raw (a bare array or pages)."""
        path = self._path("status", account, "job", job_id, "execution", execution_id)

        def fetch(page: int) -> Page[Mapping[str, Any]]:
            data = self._call(
                "GET", path, "list status events", params={"page": page, "size": MAX_PAGE_SIZE}
            )
            return parse_page(data, page, MAX_PAGE_SIZE, _raw_event, "list status events")

        return list(iter_pages(fetch, max_pages))

    def _note(self, key: str, text: str) -> None:
        if self.on_note is not None:
            self.on_note(key, text)

    def get_job(self, account: str, job_id: str) -> RunnerJob:
        data = self._call("GET", self._path("jobs", account, job_id), "get job")
        return self._job(data, "get job")

    def create_job(
        self, account: str, definition: Mapping[str, Any], immediate: bool = False
    ) -> RunnerJob:
        """Create a job (`POST /jobs/{a}?immediate=`); not retried."""
        data = self._call(
            "POST",
            self._path("jobs", account),
            "create job",
            params={"immediate": "true" if immediate else "false"},
            body=dict(definition),
            idempotent=False,
        )
        return self._job(data, "create job")

    # -- token -------------------------------------------------------------------------

    @property
    def _can_login(self) -> bool:
        return bool(self._username and self._password)

    def _renew_time(self, expiry: float) -> float:
        now = self._clock()
        lifetime = expiry - now
        if lifetime <= 0:
            # Our clock and the Runner's disagree; trust the Runner's 401 instead.
            log.warning("Runner token looks expired on arrival; assuming the 14-day lifetime")
            lifetime, expiry = DEFAULT_TOKEN_LIFETIME, now + DEFAULT_TOKEN_LIFETIME
        return expiry - min(self._renew_margin, lifetime * 0.1)

    def _current_token(self) -> str:
        with self._lock:
            if self._token and (self._renew_at is None or self._clock() < self._renew_at):
                return self._token
            if self._can_login:
                return self._login_locked()
            if self._token:
                return self._token
            raise RunnerAuthError("no Runner token or credentials configured", operation="login")

    def _drop_token(self, used: str) -> None:
        """Forget a refused token so the next call logs in (when credentials allow)."""
        with self._lock:
            if self._token == used and self._can_login:
                self._token = None

    def _token_refused(self, used: str, status: int, operation: str) -> str:
        """After a 401: log in once, or reuse a token another thread got meanwhile."""
        with self._lock:
            if self._token and self._token != used:
                return self._token
            if not self._can_login:
                raise RunnerAuthError(
                    "the Runner refused the configured token",
                    status_code=status,
                    operation=operation,
                )
            self._token = None
            return self._login_locked()

    def _login_locked(self) -> str:
        body = {"username": self._username, "password": self._password}
        response = self._send_with_retries("POST", self._auth_url, "login", None, body, None, True)
        secrets = self._secrets(body)
        if response.status_code in (400, 401, 403):
            raise RunnerAuthError(
                message_from_body(response.content, self._content_type(response), secrets),
                status_code=response.status_code,
                operation="login",
            )
        data = self._decode(response, "login", secrets)
        token = data.get("bearerToken") if isinstance(data, Mapping) else None
        if not isinstance(token, str) or not token.strip():
            raise RunnerBadResponse(
                "the login answer has no bearerToken",
                status_code=response.status_code,
                operation="login",
            )
        token = token.strip()
        KNOWN_SECRETS.add(token)
        expiry = jwt_expiry(token)
        if expiry is None:
            expiry = self._clock() + DEFAULT_TOKEN_LIFETIME
        self._token = token
        self._renew_at = self._renew_time(expiry)
        self.login_count += 1
        log.info("logged in to the Runner as %s", self._username)
        return token

    # -- plumbing ----------------------------------------------------------------------

    def _path(self, *segments: str) -> str:
        return "/" + "/".join(segment(s) for s in segments)

    def _secrets(self, body: Any = None, token: str | None = None) -> list[str]:
        found = [s for s in (self._password, self._token, token) if s]

        def walk(value: Any) -> None:
            if isinstance(value, Mapping):
                for key, item in value.items():
                    if isinstance(item, str) and key in ("sshPrivateKey", "password"):
                        found.append(item)
                    else:
                        walk(item)
            elif isinstance(value, list):
                for item in value:
                    walk(item)

        walk(body)
        return found

    @staticmethod
    def _content_type(response: requests.Response) -> str:
        return response.headers.get("Content-Type", "")

    def _call(
        self,
        method: str,
        path: str,
        operation: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
        idempotent: bool | None = None,
        relogin: bool = True,
        send_by: float | None = None,
    ) -> Any:
        """Send one API call with the shared token; decoded JSON (None for 204) or a RunnerError.

        Timed (`respawn_runner_call_seconds`) and its failures counted by kind."""
        started = time.monotonic()
        try:
            return self._call_timed(
                method,
                path,
                operation,
                params=params,
                body=body,
                idempotent=idempotent,
                relogin=relogin,
                send_by=send_by,
            )
        except RunnerError as exc:
            metrics.RUNNER_ERRORS.labels(kind=exc.kind).inc()
            raise
        finally:
            metrics.RUNNER_CALL_SECONDS.labels(operation=operation).observe(
                time.monotonic() - started
            )

    def _call_timed(
        self,
        method: str,
        path: str,
        operation: str,
        *,
        params: Mapping[str, Any] | None,
        body: Any,
        idempotent: bool | None,
        relogin: bool,
        send_by: float | None,
    ) -> Any:
        safe = method == "GET" if idempotent is None else idempotent
        url = self._api_url + path
        label = f"{operation} ({method} {path})"
        refused_once = False
        while True:
            token = self._current_token()
            if send_by is not None and time.monotonic() > send_by:
                raise RunnerUnavailable(
                    "not sent: no time left to send it safely", operation=label, sent=False
                )
            response = self._send_with_retries(method, url, label, params, body, token, safe)
            if response.status_code == 401:
                if not relogin:
                    self._drop_token(token)
                    raise RunnerAuthError(
                        self._error_text(response, body, token) or "token refused",
                        status_code=401,
                        operation=label,
                    )
                if refused_once:
                    raise RunnerAuthError(
                        self._error_text(response, body, token) or "token refused",
                        status_code=401,
                        operation=label,
                    )
                refused_once = True
                log.info("Runner refused the token on %s; logging in again", label)
                self._token_refused(token, 401, label)
                continue
            return self._decode(response, label, self._secrets(body, token))

    def _send_with_retries(
        self,
        method: str,
        url: str,
        label: str,
        params: Mapping[str, Any] | None,
        body: Any,
        token: str | None,
        safe: bool,
    ) -> requests.Response:
        attempts = self._read_attempts if safe else 1
        for attempt in range(1, attempts + 1):
            last = attempt == attempts
            try:
                response = self._send(method, url, label, params, body, token)
            except (RunnerUnavailable, RunnerTimeout) as exc:
                if last:
                    raise
                self._pause(label, str(exc.message), attempt)
                continue
            if response.status_code in _RETRYABLE_STATUSES and not last:
                self._pause(label, f"HTTP {response.status_code}", attempt)
                continue
            return response
        raise AssertionError("unreachable")  # pragma: no cover

    def _pause(self, label: str, why: str, attempt: int) -> None:
        delay = self._retry_backoff * (2 ** (attempt - 1))
        log.warning("Runner %s failed (%s); retry %d in %.2fs", label, why, attempt, delay)
        self._sleep(delay)

    def _send(
        self,
        method: str,
        url: str,
        label: str,
        params: Mapping[str, Any] | None,
        body: Any,
        token: str | None,
    ) -> requests.Response:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        data = json.dumps(body) if body is not None else None
        started = time.monotonic()
        try:
            response = self._session.request(
                method,
                url,
                params=params,
                data=data,
                headers=headers,
                timeout=self._timeout,
                allow_redirects=False,
            )
        except requests.ConnectionError as exc:
            if connection_never_made(exc):
                raise RunnerUnavailable(
                    "could not connect to the Runner", operation=label, sent=False
                ) from None
            raise RunnerUnavailable(
                "the connection to the Runner broke before an answer", operation=label
            ) from None
        except requests.ReadTimeout:
            raise RunnerTimeout(
                f"no answer within {self._timeout[1]:g}s; the request may have been applied",
                operation=label,
            ) from None
        except requests.RequestException as exc:
            raise RunnerUnavailable(
                f"request failed ({type(exc).__name__})", operation=label
            ) from None
        log.debug(
            "Runner %s -> %d in %.0f ms",
            label,
            response.status_code,
            (time.monotonic() - started) * 1000,
        )
        return response

    def _error_text(self, response: requests.Response, body: Any, token: str | None) -> str:
        return message_from_body(
            response.content, self._content_type(response), self._secrets(body, token)
        )

    def _decode(self, response: requests.Response, label: str, secrets: Sequence[str]) -> Any:
        status = response.status_code
        if 200 <= status < 300:
            if status == 204 or not response.content.strip():
                return None
            try:
                return json.loads(response.content)
            except ValueError:
                raise RunnerBadResponse(
                    "the answer is not JSON", status_code=status, operation=label
                ) from None
        message = message_from_body(response.content, self._content_type(response), secrets)
        error: type[RunnerError]
        if status in (401, 403):
            error = RunnerAuthError
        elif status == 404:
            error = RunnerNotFound
        elif status in _REJECTED_STATUSES:
            error = RunnerRejected
        elif status in _RETRYABLE_STATUSES or status >= 500:
            error = RunnerUnavailable
        elif 300 <= status < 400:
            error, message = RunnerBadResponse, "unexpected redirect"
        else:
            error = RunnerError
        raise error(message, status_code=status, operation=label)

    def _execution(self, data: Any, label: str) -> ExecutionDocument:
        if not isinstance(data, Mapping):
            raise RunnerBadResponse("expected an execution document", operation=label)
        try:
            return parse_execution_document(data)
        except DocumentError as exc:
            raise RunnerBadResponse(
                f"bad execution document ({', '.join(sorted(exc.fields))})", operation=label
            ) from None

    def _job(self, data: Any, label: str) -> RunnerJob:
        try:
            return parse_job(data)
        except ShapeError as exc:
            raise RunnerBadResponse(f"bad job answer: {exc}", operation=label) from None

    def _execution_page(
        self, path: str, label: str, page: int, size: int
    ) -> Page[ExecutionDocument]:
        if page < 0 or not 1 <= size <= MAX_PAGE_SIZE:
            raise ValueError(f"page must be >= 0 and size 1..{MAX_PAGE_SIZE}")
        data = self._call("GET", path, label, params={"page": page, "size": size})
        return parse_page(data, page, size, lambda item: self._execution(item, label), label)
