"""The Runner client against a fake transport: bodies, headers, tokens, retries, errors."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from http.client import RemoteDisconnected
from typing import Any

import pytest
import requests
from urllib3.exceptions import MaxRetryError, NewConnectionError, ProtocolError

from app.runner import (
    RestartHost,
    RunnerAuthError,
    RunnerBadResponse,
    RunnerClient,
    RunnerError,
    RunnerNotFound,
    RunnerRejected,
    RunnerTimeout,
    RunnerUnavailable,
    jwt_expiry,
)
from tests.conftest import fixture_path
from tests.runner.fakes import API, AUTH, FakeRunner, Seen, fake_session, make_jwt

ACCOUNT = "XXXX"
JOB = "1111505e-6773-494a-b2bf-d2cc2684710d"
EXECUTION = "44fdcfa2-6a7f-46d3-9f71-22e629e2358a"


def fixture(name: str) -> Any:
    return json.loads(fixture_path(name).read_text())


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def fake() -> FakeRunner:
    return FakeRunner()


@pytest.fixture
def session(fake: FakeRunner) -> Iterator[requests.Session]:
    with fake_session(fake) as session:
        yield session


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def client(session: requests.Session, sleeps: list[float]) -> RunnerClient:
    return RunnerClient(session, API, AUTH, "user@company.com", "pa55word", sleep=sleeps.append)


def execution(status: str = "FAILURE") -> dict[str, Any]:
    doc: dict[str, Any] = fixture("restart-response.json")
    doc["status"] = status
    return doc


# -- the restart call ---------------------------------------------------------------------------


def test_restart_sends_the_published_body_and_headers(
    client: RunnerClient, fake: FakeRunner
) -> None:
    fake.replies.append((200, fixture("restart-response.json")))

    document = client.restart(ACCOUNT, JOB, EXECUTION, [RestartHost("localhost")])

    login, call = fake.seen
    assert login.url == AUTH and login.json == fixture("login-request.json") | {
        "username": "user@company.com",
        "password": "pa55word",
    }
    assert call.method == "POST"
    assert call.path == f"jobs/{ACCOUNT}/{JOB}/executions/{EXECUTION}/restart"
    assert call.json == fixture("restart-request.json")
    assert call.headers["Authorization"] == "Bearer token-1"
    assert call.headers["Content-Type"] == "application/json"
    assert call.timeout == (3.05, 10.0)
    assert document.status == "PENDING"
    assert document.execution_id == EXECUTION
    assert document.failed_hosts == ()  # the published `[0]` is a placeholder
    assert [(t.start_ms, t.end_ms) for t in document.timers] == [(1445359386400, 1445359388219)]


@pytest.mark.parametrize(
    ("hosts", "key", "body"),
    [
        (None, None, {}),
        ([], None, {}),
        (None, "QUxM", {"sshPrivateKey": "QUxM"}),
        (
            [RestartHost("web1", "V0VC"), RestartHost("db1")],
            "QUxM",
            {
                "hosts": [{"id": "web1", "sshPrivateKey": "V0VC"}, {"id": "db1"}],
                "sshPrivateKey": "QUxM",
            },
        ),
    ],
)
def test_restart_body_omits_absent_keys(
    client: RunnerClient,
    fake: FakeRunner,
    hosts: list[RestartHost] | None,
    key: str | None,
    body: dict[str, Any],
) -> None:
    fake.replies.append((200, execution("PENDING")))
    client.restart(ACCOUNT, JOB, EXECUTION, hosts, key)
    assert fake.api_calls[0].body == json.dumps(body).encode()


def test_restart_host_repr_hides_the_key() -> None:
    assert "S3CRET" not in repr(RestartHost("web1", "S3CRET"))


def test_path_segments_are_escaped(client: RunnerClient, fake: FakeRunner) -> None:
    fake.replies.append((200, execution()))
    client.get_execution("XX/../YY", JOB, EXECUTION)
    assert fake.api_calls[0].url.startswith(f"{API}/jobs/XX%2F..%2FYY/")


@pytest.mark.parametrize("execution_id", ["..", "."])
def test_dot_segments_are_never_sent(
    client: RunnerClient, fake: FakeRunner, execution_id: str
) -> None:
    """`..` as an id would make the call another path (the HTTP stack resolves even an
    encoded one): the call is refused before anything is sent."""
    with pytest.raises(RunnerRejected) as refused:
        client.get_execution(ACCOUNT, JOB, execution_id)

    assert refused.value.sent is False
    assert fake.api_calls == []


# -- tokens ---------------------------------------------------------------------------------


def test_token_is_reused_across_calls(client: RunnerClient, fake: FakeRunner) -> None:
    fake.handler = lambda seen: (200, execution())
    for _ in range(3):
        client.get_execution(ACCOUNT, JOB, EXECUTION)
    assert len(fake.logins) == 1
    assert {c.headers["Authorization"] for c in fake.api_calls} == {"Bearer token-1"}


def test_one_login_shared_by_concurrent_threads(client: RunnerClient, fake: FakeRunner) -> None:
    def slow_login(seen: Seen) -> tuple[int, Any]:
        time.sleep(0.05)
        return (200, {"bearerToken": "shared-token"})

    fake.login_reply = slow_login
    fake.handler = lambda seen: (200, execution())
    errors: list[BaseException] = []

    def call() -> None:
        try:
            client.get_execution(ACCOUNT, JOB, EXECUTION)
        except BaseException as exc:  # noqa: BLE001  (collected and asserted below)
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len(fake.logins) == 1
    assert len(fake.api_calls) == 8


def test_logs_in_again_before_the_jwt_expires(session: requests.Session, fake: FakeRunner) -> None:
    clock = FakeClock()
    tokens = [make_jwt(clock.now + 1000), make_jwt(clock.now + 3000)]
    fake.tokens = list(tokens)
    client = RunnerClient(session, API, AUTH, "u", "p", clock=clock)
    fake.handler = lambda seen: (200, execution())

    client.get_execution(ACCOUNT, JOB, EXECUTION)
    clock.now += 850  # 150 s left: more than the 10 % margin
    client.get_execution(ACCOUNT, JOB, EXECUTION)
    assert len(fake.logins) == 1
    clock.now += 60  # 90 s left of 1000: within the margin, renew before it runs out
    client.get_execution(ACCOUNT, JOB, EXECUTION)
    assert len(fake.logins) == 2
    assert fake.api_calls[-1].headers["Authorization"] == f"Bearer {tokens[1]}"


def test_opaque_token_is_assumed_to_last_14_days(
    session: requests.Session, fake: FakeRunner
) -> None:
    clock = FakeClock()
    client = RunnerClient(session, API, AUTH, "u", "p", clock=clock)
    fake.handler = lambda seen: (200, execution())
    client.get_execution(ACCOUNT, JOB, EXECUTION)
    clock.now += 13 * 86400
    client.get_execution(ACCOUNT, JOB, EXECUTION)
    assert len(fake.logins) == 1
    clock.now += 86400
    client.get_execution(ACCOUNT, JOB, EXECUTION)
    assert len(fake.logins) == 2


def test_a_401_logs_in_again_once(client: RunnerClient, fake: FakeRunner) -> None:
    fake.replies += [
        (401, {"message": "Authorization has been denied for this request."}),
        (200, execution()),
    ]
    client.get_execution(ACCOUNT, JOB, EXECUTION)
    assert len(fake.logins) == 2
    assert [c.headers["Authorization"] for c in fake.api_calls] == [
        "Bearer token-1",
        "Bearer token-2",
    ]


def test_a_second_401_is_an_auth_error_not_a_loop(client: RunnerClient, fake: FakeRunner) -> None:
    fake.handler = lambda seen: (401, {"message": "Authorization has been denied."})
    with pytest.raises(RunnerAuthError) as caught:
        client.get_execution(ACCOUNT, JOB, EXECUTION)
    assert caught.value.status_code == 401
    assert len(fake.logins) == 2
    assert len(fake.api_calls) == 2


def test_a_401_on_restart_is_not_resent_but_the_next_call_logs_in(
    client: RunnerClient, fake: FakeRunner
) -> None:
    fake.replies += [(401, {"message": "Authorization has been denied."}), (200, execution())]
    with pytest.raises(RunnerAuthError):
        client.restart(ACCOUNT, JOB, EXECUTION)
    assert len(fake.api_calls) == 1  # the restart is never sent twice by the client

    client.get_execution(ACCOUNT, JOB, EXECUTION)

    assert len(fake.logins) == 2


def test_fixed_token_refused_without_credentials(
    session: requests.Session, fake: FakeRunner
) -> None:
    client = RunnerClient(session, API, AUTH, None, None, token="fixed-token")
    fake.handler = lambda seen: (401, {"message": "denied"})
    with pytest.raises(RunnerAuthError):
        client.get_execution(ACCOUNT, JOB, EXECUTION)
    assert fake.logins == []
    assert len(fake.api_calls) == 1
    assert fake.api_calls[0].headers["Authorization"] == "Bearer fixed-token"


def test_fixed_token_refused_with_credentials_logs_in(
    session: requests.Session, fake: FakeRunner
) -> None:
    client = RunnerClient(session, API, AUTH, "u", "p", token="fixed-token")
    fake.replies += [(401, {"message": "denied"}), (200, execution())]
    client.get_execution(ACCOUNT, JOB, EXECUTION)
    assert len(fake.logins) == 1
    assert fake.api_calls[1].headers["Authorization"] == "Bearer token-1"


def test_client_needs_a_token_or_credentials(session: requests.Session) -> None:
    with pytest.raises(ValueError, match="token or a username"):
        RunnerClient(session, API, AUTH, "u", None)


def test_login_refused_is_an_auth_error_with_the_published_message(
    client: RunnerClient, fake: FakeRunner
) -> None:
    fake.login_reply = lambda seen: (400, fixture("login-error-400.json"))
    with pytest.raises(RunnerAuthError) as caught:
        client.get_execution(ACCOUNT, JOB, EXECUTION)
    assert caught.value.status_code == 400
    assert caught.value.message == fixture("login-error-400.json")["message"]
    assert fake.api_calls == []


def test_login_answer_without_token_is_a_bad_response(
    client: RunnerClient, fake: FakeRunner
) -> None:
    fake.login_reply = lambda seen: (200, {"userName": "u"})
    with pytest.raises(RunnerBadResponse):
        client.get_execution(ACCOUNT, JOB, EXECUTION)


def test_jwt_expiry() -> None:
    assert jwt_expiry(make_jwt(1234.5)) == 1234.5
    assert jwt_expiry("opaque") is None
    assert jwt_expiry("a.!!!.c") is None
    assert jwt_expiry("a.eyJ4IjogMX0.c") is None  # no exp claim


# -- retries --------------------------------------------------------------------------------


def test_reads_are_retried_on_5xx(
    client: RunnerClient, fake: FakeRunner, sleeps: list[float]
) -> None:
    fake.replies += [(503, {"message": "busy"}), (500, "oops"), (200, execution())]
    assert client.get_execution(ACCOUNT, JOB, EXECUTION).status == "FAILURE"
    assert len(fake.api_calls) == 3
    assert sleeps == [0.2, 0.4]


def test_reads_give_up_after_a_few_attempts(
    client: RunnerClient, fake: FakeRunner, sleeps: list[float]
) -> None:
    fake.handler = lambda seen: (503, {"message": "The service is unavailable."})
    with pytest.raises(RunnerUnavailable) as caught:
        client.get_execution(ACCOUNT, JOB, EXECUTION)
    assert caught.value.status_code == 503
    assert caught.value.message == "The service is unavailable."
    assert len(fake.api_calls) == 3


def test_reads_are_retried_on_timeouts(client: RunnerClient, fake: FakeRunner) -> None:
    fake.replies += [requests.ReadTimeout("slow"), (200, execution())]
    client.get_execution(ACCOUNT, JOB, EXECUTION)
    assert len(fake.api_calls) == 2


def test_restart_is_never_retried_on_5xx(client: RunnerClient, fake: FakeRunner) -> None:
    fake.handler = lambda seen: (500, {"message": "An error has occurred."})
    with pytest.raises(RunnerUnavailable) as caught:
        client.restart(ACCOUNT, JOB, EXECUTION)
    assert caught.value.sent is True
    assert len(fake.api_calls) == 1


def test_restart_read_timeout_may_have_been_applied(client: RunnerClient, fake: FakeRunner) -> None:
    fake.handler = lambda seen: requests.ReadTimeout("read timed out")
    with pytest.raises(RunnerTimeout) as caught:
        client.restart(ACCOUNT, JOB, EXECUTION)
    assert caught.value.sent is True
    assert caught.value.status_code is None
    assert len(fake.api_calls) == 1


def _refused() -> requests.ConnectionError:
    reason = NewConnectionError(None, "Failed to establish a new connection: refused")  # type: ignore[arg-type]
    return requests.ConnectionError(MaxRetryError(None, f"{API}/x", reason))  # type: ignore[arg-type]


def test_restart_connect_failure_was_surely_not_sent(
    client: RunnerClient, fake: FakeRunner
) -> None:
    fake.handler = lambda seen: _refused()
    with pytest.raises(RunnerUnavailable) as caught:
        client.restart(ACCOUNT, JOB, EXECUTION)
    assert caught.value.sent is False
    assert len(fake.api_calls) == 1


def test_connect_timeout_was_not_sent(client: RunnerClient, fake: FakeRunner) -> None:
    fake.handler = lambda seen: requests.ConnectTimeout("connect timed out")
    with pytest.raises(RunnerUnavailable) as caught:
        client.restart(ACCOUNT, JOB, EXECUTION)
    assert caught.value.sent is False


def test_connection_dropped_after_sending_may_have_been_applied(
    client: RunnerClient, fake: FakeRunner
) -> None:
    dropped = ProtocolError("Connection aborted.", RemoteDisconnected("closed"))
    fake.handler = lambda seen: requests.ConnectionError(dropped)
    with pytest.raises(RunnerUnavailable) as caught:
        client.restart(ACCOUNT, JOB, EXECUTION)
    assert caught.value.sent is True


# -- error mapping --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (400, RunnerRejected),
        (409, RunnerRejected),
        (422, RunnerRejected),
        (403, RunnerAuthError),
        (404, RunnerNotFound),
        (500, RunnerUnavailable),
        (502, RunnerUnavailable),
        (504, RunnerUnavailable),
        (302, RunnerBadResponse),
        (418, RunnerError),
    ],
)
def test_status_codes_become_typed_errors(
    client: RunnerClient, fake: FakeRunner, status: int, error: type[RunnerError]
) -> None:
    fake.handler = lambda seen: (status, {"message": "nope"}, {"Location": "https://elsewhere"})
    with pytest.raises(error) as caught:
        client.restart(ACCOUNT, JOB, EXECUTION)
    assert type(caught.value) is error
    assert caught.value.status_code == status


def test_not_restartable_is_rejected_with_the_runner_text(
    client: RunnerClient, fake: FakeRunner
) -> None:
    message = f"Execution {EXECUTION} is RUNNING; only a failed execution can be restarted."
    fake.replies.append((400, {"message": message}))
    with pytest.raises(RunnerRejected) as caught:
        client.restart(ACCOUNT, JOB, EXECUTION)
    assert caught.value.message == message
    assert str(caught.value).startswith("restart (POST /jobs/XXXX/")
    assert "HTTP 400" in str(caught.value)


@pytest.mark.parametrize(
    "answer",
    [(200, "<html>proxy login</html>"), (200, {"no": "execution_id"}), (200, [1, 2])],
)
def test_unparseable_answers_are_bad_responses(
    client: RunnerClient, fake: FakeRunner, answer: tuple[int, Any]
) -> None:
    fake.replies.append(answer)
    with pytest.raises(RunnerBadResponse):
        client.get_execution(ACCOUNT, JOB, EXECUTION)


# -- secrets never leak ---------------------------------------------------------------------

SSH_KEY = (
    "LS0tLS1CRUdJTiBPUEVOU1NIIFBSSVZBVEUgS0VZLS0tLS0KYjNCbGJuTnphQzFyWlhrdGRqRUFBQUFBQkc1"
    "dmJtVUFBQUFFYm05dVpRQUFBQUFBQUFBQkFBQUFNd0FBQUF0emMyZ3RaVwo="
)
HOST_KEY = "c2hvcnQta2V5LWZvci13ZWIx"  # short: caught by value, not by pattern
PASSWORD = "hunter2-correct-horse"
PEM = (
    "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n"
    "-----END OPENSSH PRIVATE KEY-----"
)


def _echo(seen: Seen) -> tuple[int, Any]:
    body = seen.json or {}
    token = seen.headers.get("Authorization", "")
    return (
        400,
        {
            "message": f"Invalid request {json.dumps(body)} with {token} and key {PEM}",
            "modelState": {"hosts[0].sshPrivateKey": [f"bad key {HOST_KEY}"]},
        },
    )


@pytest.mark.parametrize("status", [400, 500, 422])
def test_errors_never_carry_token_password_or_keys(
    session: requests.Session,
    fake: FakeRunner,
    caplog: pytest.LogCaptureFixture,
    status: int,
) -> None:
    caplog.set_level(logging.DEBUG)
    token = make_jwt(time.time() + 3600)
    fake.tokens = [token]
    client = RunnerClient(session, API, AUTH, "u", PASSWORD, sleep=lambda s: None)
    fake.handler = lambda seen: (status, _echo(seen)[1])

    with pytest.raises(RunnerError) as caught:
        client.restart(ACCOUNT, JOB, EXECUTION, [RestartHost("web1", HOST_KEY)], SSH_KEY)

    exc = caught.value
    shown = [str(exc), repr(exc), exc.message, caplog.text]
    for text in shown:
        for secret in (token, PASSWORD, SSH_KEY, HOST_KEY, "b3BlbnNzaC1rZXktdjEAAAAA"):
            assert secret not in text
        assert "token-" not in text
    assert "[redacted]" in exc.message
    assert len(exc.message) <= 300


def test_login_error_never_carries_the_password(client: RunnerClient, fake: FakeRunner) -> None:
    fake.login_reply = lambda seen: (400, {"message": f"bad password {seen.json['password']}"})
    with pytest.raises(RunnerAuthError) as caught:
        client.get_execution(ACCOUNT, JOB, EXECUTION)
    assert "pa55word" not in str(caught.value)
    assert "pa55word" not in repr(caught.value)


def test_client_repr_has_no_secrets(session: requests.Session) -> None:
    client = RunnerClient(session, API, AUTH, "u", PASSWORD, token="fixed-token")
    assert PASSWORD not in repr(client) and "fixed-token" not in repr(client)


# -- lists and jobs -------------------------------------------------------------------------


def test_executions_page_from_the_published_example(client: RunnerClient, fake: FakeRunner) -> None:
    fake.replies.append((200, fixture("executions-page.json")))
    page = client.list_job_executions(ACCOUNT, JOB, page=0, size=2)

    assert fake.api_calls[0].url.endswith("/executions?page=0&size=2")
    assert page.total_size == 2 and page.page == 0 and page.size == 2 and page.is_last
    failed, running = page.items
    assert failed.status == "FAILURE"
    assert failed.failed_hosts == ("localhost",)
    assert [(t.start_ms, t.end_ms) for t in failed.timers] == [(1444924450534, 1444924452123)]
    assert running.status == "RUNNING"
    assert running.record_id == "61671a90-93f2-491a-b8f2-aed515f0b5a6"


def test_iterating_pages_until_the_total(client: RunnerClient, fake: FakeRunner) -> None:
    docs = [execution() | {"execution_id": f"e{i}"} for i in range(5)]

    def pages(seen: Seen) -> tuple[int, Any]:
        page = int(seen.url.split("page=")[1].split("&")[0])
        return (
            200,
            {"totalSize": 5, "page": page, "size": 2, "results": docs[page * 2 : page * 2 + 2]},
        )

    fake.handler = pages
    found = [d.execution_id for d in client.iter_account_executions(ACCOUNT, size=2)]
    assert found == ["e0", "e1", "e2", "e3", "e4"]
    assert len(fake.api_calls) == 3
    assert fake.api_calls[0].path == f"jobs/{ACCOUNT}/executions"


def test_bare_arrays_and_bad_items_are_tolerated(
    client: RunnerClient, fake: FakeRunner, caplog: pytest.LogCaptureFixture
) -> None:
    fake.replies += [
        (
            200,
            [
                execution() | {"execution_id": "a"},
                {"status": "FAILURE"},
                execution() | {"execution_id": "b"},
            ],
        ),
        (200, [execution() | {"execution_id": "c"}]),
    ]
    found = [d.execution_id for d in client.iter_job_executions(ACCOUNT, JOB, size=3)]
    assert found == ["a", "b", "c"]
    assert "skipping an item" in caplog.text


def test_paging_stops_at_max_pages(client: RunnerClient, fake: FakeRunner) -> None:
    fake.handler = lambda seen: (200, [execution()])  # ignores paging, never ends
    found = list(client.iter_job_executions(ACCOUNT, JOB, size=1, max_pages=4))
    assert len(found) == 4


def test_page_size_is_checked(client: RunnerClient) -> None:
    with pytest.raises(ValueError, match="size"):
        client.list_account_executions(ACCOUNT, size=101)


def test_get_job_tolerates_the_one_item_array(client: RunnerClient, fake: FakeRunner) -> None:
    job = fixture("job-create-request.json") | {
        "id": JOB,
        "accountAlias": ACCOUNT,
        "status": "ACTIVE",
        "createdTime": 1445359386400,
        "lastUpdatedTime": 1445359386401,
    }
    fake.replies += [(200, [job]), (200, job | {"callbacks": ["http://old.example/cb"]})]

    first = client.get_job(ACCOUNT, JOB)
    assert first.id == JOB and first.description == "Sample Job"
    assert first.host_ids == ("localhost",)
    assert [(c.url, c.level) for c in first.callbacks] == [("your callback webhook", "DEBUG")]
    assert first.created_ms == 1445359386400
    assert first.definition["repository"]["credentials"] == "[redacted]"
    assert first.definition["hosts"][0]["sshPrivateKey"] == "[redacted]"

    second = client.get_job(ACCOUNT, JOB)
    assert [(c.url, c.level) for c in second.callbacks] == [("http://old.example/cb", "DEBUG")]


def test_get_job_rejects_answers_without_an_id(client: RunnerClient, fake: FakeRunner) -> None:
    fake.replies.append((200, [{"description": "no id"}]))
    with pytest.raises(RunnerBadResponse):
        client.get_job(ACCOUNT, JOB)
