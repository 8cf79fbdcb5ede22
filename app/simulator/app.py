"""The simulator's Flask app factory, and a server that runs it in a thread."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from types import TracebackType

from flask import Flask
from werkzeug.serving import BaseWSGIServer, make_server

from app.simulator.config import SimulatorConfig
from app.simulator.engine import Engine
from app.simulator.state import Simulator
from app.simulator.views import EXTENSION, api, control, register_error_handlers

LOGIN_PATH = "/v2/authentication/login"
MAX_BODY_BYTES = 1024 * 1024


def create_simulator_app(
    config: SimulatorConfig | None = None,
    engine: Engine | str | None = None,
    clock: Callable[[], float] = time.time,
) -> Flask:
    """The simulated Runner API. Its clock thread starts with `simulator_of(app).start()`
    (SimulatorServer does it) and stops with `.close()`. `engine` is an Engine, or a name
    ("scripted", "ansible"); None takes `config.engine`."""
    app = Flask("runner_simulator")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions[EXTENSION] = Simulator(config, engine, clock)
    app.register_blueprint(api)
    app.register_blueprint(control)
    register_error_handlers(app)
    return app


def simulator_of(app: Flask) -> Simulator:
    sim: Simulator = app.extensions[EXTENSION]
    return sim


class SimulatorServer:
    """The simulator on a real socket, served by werkzeug's threaded server in a thread.

    `port=0` picks a free port; `url` and `auth_url` are what a Runner client is given.
    """

    def __init__(
        self,
        config: SimulatorConfig | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        engine: Engine | str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.app = create_simulator_app(config, engine, clock)
        self.simulator = simulator_of(self.app)
        self._server: BaseWSGIServer = make_server(host, port, self.app, threaded=True)
        self.host = host
        self.port = self._server.server_port
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{self.port}"
        self.auth_url = self.url + LOGIN_PATH
        self._thread: threading.Thread | None = None

    def start(self) -> SimulatorServer:
        """Serve from a background thread; returns self."""
        self.simulator.start()
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="sim-http",
            daemon=True,
        )
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve from this thread until interrupted (the CLI)."""
        self.simulator.start()
        try:
            self._server.serve_forever(poll_interval=0.2)
        finally:
            self.close()

    def close(self) -> None:
        self.simulator.close()
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> SimulatorServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
