"""Login, token lifetime, re-login and account isolation, over real HTTP."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import pytest
import requests

from app.runner import RunnerAuthError, RunnerClient, RunnerNotFound
from app.simulator import SimulatorControl, SimulatorServer
from tests.conftest import fixture_path
from tests.simulator.conftest import (
    ACCOUNT,
    OTHER_ACCOUNT,
    OTHER_PASSWORD,
    OTHER_USER,
    PASSWORD,
    USER,
    create_job,
    make_client,
)


def fixture(name: str) -> Any:
    return json.loads(fixture_path(name).read_text())


def claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    decoded: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return decoded


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def test_login_answers_the_published_shape(sim: SimulatorServer, http: requests.Session) -> None:
    response = http.post(sim.auth_url, json={"username": USER, "password": PASSWORD}, timeout=5)
    assert response.status_code == 200
    body = response.json()
    assert set(body) == set(fixture("login-response.json"))
    assert body["userName"] == USER and body["accountAlias"] == ACCOUNT
    token = body["bearerToken"]
    assert len(token.split(".")) == 3
    payload = claims(token)
    assert payload["exp"] - payload["nbf"] == pytest.approx(14 * 86400, abs=1)


def test_bad_credentials_get_the_published_400(
    sim: SimulatorServer, http: requests.Session
) -> None:
    for body in ({"username": USER, "password": "wrong"}, {"username": "nobody"}, [1]):
        response = http.post(sim.auth_url, json=body, timeout=5)
        assert response.status_code == 400
        assert response.json() == fixture("login-error-400.json")
    client = make_client(sim, http, password="wrong")
    with pytest.raises(RunnerAuthError) as caught:
        client.list_account_executions(ACCOUNT)
    assert caught.value.status_code == 400
    assert "wrong" not in str(caught.value)


@pytest.mark.parametrize(
    "authorization", [None, "Bearer", "Bearer nonsense", "Basic dXNlcjpwYXNz", "tampered"]
)
def test_missing_or_bad_tokens_get_401(
    sim: SimulatorServer, http: requests.Session, client: RunnerClient, authorization: str | None
) -> None:
    if authorization == "tampered":
        token = client._current_token()
        header, _claims, signature = token.split(".")
        forged = dict(claims(token), **{"urn:tier3:account-alias": OTHER_ACCOUNT})
        encoded = base64.urlsafe_b64encode(json.dumps(forged).encode()).rstrip(b"=").decode()
        authorization = f"Bearer {header}.{encoded}.{signature}"
    headers = {"Authorization": authorization} if authorization else {}
    response = http.get(f"{sim.url}/jobs/{ACCOUNT}", headers=headers, timeout=5)
    assert response.status_code == 401
    assert "message" in response.json()


def test_client_reuses_its_token(
    sim: SimulatorServer, client: RunnerClient, control: SimulatorControl
) -> None:
    for _ in range(3):
        client.list_account_executions(ACCOUNT)
    requests_seen = control.calls()["requests"]
    assert requests_seen["runner_api.login"] == 1
    assert requests_seen["runner_api.list_account_executions"] == 3


def test_token_expiry_and_renewal_before_it(
    make_sim: Callable[..., SimulatorServer], http: requests.Session
) -> None:
    clock = Clock()
    sim = make_sim(clock=clock, token_ttl=1000)
    client = make_client(sim, http, clock=clock)
    client.list_account_executions(ACCOUNT)
    token = client._current_token()

    clock.now += 1000  # the simulator refuses the token once it expired...
    response = http.get(
        f"{sim.url}/jobs/{ACCOUNT}", headers={"Authorization": f"Bearer {token}"}, timeout=5
    )
    assert response.status_code == 401

    clock.now -= 50  # ...and the client renews it before that (50 s left, margin 100 s)
    client.list_account_executions(ACCOUNT)
    assert client.login_count == 2
    calls = sim.simulator.calls.snapshot()["requests"]
    assert calls["runner_api.list_account_executions"] == 2  # no 401 and no retry


def test_early_token_expiry_leads_to_one_relogin(
    sim: SimulatorServer, client: RunnerClient, control: SimulatorControl
) -> None:
    client.list_account_executions(ACCOUNT)
    assert control.expire_tokens() == 1
    client.list_account_executions(ACCOUNT)
    assert client.login_count == 2
    assert control.calls()["requests"]["runner_api.list_account_executions"] == 3


def test_short_token_ttl_set_at_runtime(
    sim: SimulatorServer, http: requests.Session, control: SimulatorControl
) -> None:
    control.settings(token_ttl=5)
    token = http.post(sim.auth_url, json={"username": USER, "password": PASSWORD}, timeout=5)
    payload = claims(token.json()["bearerToken"])
    assert payload["exp"] - payload["iat"] == pytest.approx(5, abs=1)


def test_accounts_are_isolated(
    sim: SimulatorServer, http: requests.Session, client: RunnerClient
) -> None:
    job = create_job(client, ["web1"])
    other = make_client(sim, http, username=OTHER_USER, password=OTHER_PASSWORD)

    with pytest.raises(RunnerAuthError) as caught:
        client.list_account_executions(OTHER_ACCOUNT)
    assert caught.value.status_code == 403
    with pytest.raises(RunnerAuthError):
        other.get_job(ACCOUNT, job.id)
    with pytest.raises(RunnerNotFound):
        other.get_job(OTHER_ACCOUNT, job.id)
    assert other.list_account_executions(OTHER_ACCOUNT).items == ()
