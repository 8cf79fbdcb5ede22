"""The simulator on a real loopback socket, a Runner client talking to it, a callback sink."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest
import requests
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from app.runner import RunnerClient, RunnerJob
from app.simulator import SimulatorConfig, SimulatorControl, SimulatorServer, SimUser, fleet_job

USER, PASSWORD, ACCOUNT = "user@company.com", "sim-pa55word", "XXXX"
OTHER_USER, OTHER_PASSWORD, OTHER_ACCOUNT = "other@company.com", "other-pa55word", "YYYY"


def config(**options: Any) -> SimulatorConfig:
    options.setdefault("seed", 7)
    options.setdefault("speed", 0)
    users = (SimUser(USER, PASSWORD, ACCOUNT), SimUser(OTHER_USER, OTHER_PASSWORD, OTHER_ACCOUNT))
    return SimulatorConfig(users=users, **options)


@pytest.fixture
def make_sim() -> Iterator[Callable[..., SimulatorServer]]:
    servers: list[SimulatorServer] = []

    def make(clock: Callable[[], float] = time.time, **options: Any) -> SimulatorServer:
        server = SimulatorServer(config(**options), clock=clock).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.close()


@pytest.fixture
def sim(make_sim: Callable[..., SimulatorServer]) -> SimulatorServer:
    """A simulator whose clock is stopped: tests move it with `sim.simulator.advance()`."""
    return make_sim()


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


def make_client(sim: SimulatorServer, session: requests.Session, **options: Any) -> RunnerClient:
    options.setdefault("read_timeout", 5.0)
    options.setdefault("retry_backoff", 0.01)
    username = options.pop("username", USER)
    password = options.pop("password", PASSWORD)
    return RunnerClient(session, sim.url, sim.auth_url, username, password, **options)


@pytest.fixture
def client(sim: SimulatorServer, http: requests.Session) -> RunnerClient:
    return make_client(sim, http)


@pytest.fixture
def control(sim: SimulatorServer, http: requests.Session) -> SimulatorControl:
    return SimulatorControl(http, sim.url)


def create_job(
    client: RunnerClient,
    hosts: Mapping[str, Any] | list[str],
    callbacks: list[Any] | None = None,
    account: str = ACCOUNT,
) -> RunnerJob:
    return client.create_job(account, fleet_job("test job", hosts, callbacks or []))


def bearer(client: RunnerClient) -> dict[str, str]:
    return {"Authorization": f"Bearer {client._current_token()}"}


class Receiver:
    """A callback sink on loopback that records every POSTed JSON body."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        self._server = make_server("127.0.0.1", 0, self._app, threaded=True)
        self.base = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def _app(self, environ: Any, start_response: Any) -> Any:
        request = Request(environ)
        body = json.loads(request.get_data() or b"null")
        with self._cond:
            self.received.append(
                {"path": request.path, "body": body, "content_type": request.content_type}
            )
            self._cond.notify_all()
        return Response(status=202)(environ, start_response)

    def url(self, name: str) -> str:
        return f"{self.base}/callbacks/{name}"

    def bodies(self, name: str) -> list[dict[str, Any]]:
        with self._cond:
            return [r["body"] for r in self.received if r["path"] == f"/callbacks/{name}"]

    def close(self) -> None:
        self._server.shutdown()
        self._thread.join(timeout=5)
        self._server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    sink = Receiver()
    yield sink
    sink.close()
