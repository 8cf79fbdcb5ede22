"""gunicorn settings for `respawn serve` and the container; each may be overridden by flags."""

import os
import shutil
from pathlib import Path

from gunicorn.glogging import Logger

from app import metrics
from app.collector import PacedCollector
from app.dispatcher import start_background
from app.extensions import get_runtime
from app.redact import escape_controls, redact_text

bind = os.environ.get("RESPAWN_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("RESPAWN_WORKERS", "2"))
threads = int(os.environ.get("RESPAWN_THREADS", "4"))
# gthread whose threads only take requests whose head has arrived: slow clients cost a socket,
# not a thread (app/serving.py).
worker_class = "app.serving.HeadFirstWorker"
timeout = 30
graceful_timeout = 20
keepalive = 5
# A proxy in front sets X-Forwarded-*; believe it only from these networks, the same list
# the app uses for client addresses (app/web/proxy.py). None by default.
forwarded_allow_ips = os.environ.get("RESPAWN_TRUSTED_PROXIES", "")
# No control socket: a second instance on the machine could take over one shared path.
control_socket_disable = True
# JSON logs: the app writes one line per request itself (app/web/__init__.py), and gunicorn's
# own lines are JSON too.
JSON_LOGS = os.environ.get("RESPAWN_LOG_FORMAT") == "json"
accesslog = None if JSON_LOGS else "-"
errorlog = "-"
if JSON_LOGS:
    logconfig_dict = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "app.logging_setup.JSONFormatter"}},
        # gunicorn's defaults name these two handlers; both write JSON here.
        "handlers": {
            name: {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "stream": "ext://sys.stderr",
            }
            for name in ("console", "error_console")
        },
        "root": {"level": "INFO", "handlers": ["console"]},
        "loggers": {
            "gunicorn.error": {"level": "INFO", "handlers": ["error_console"], "propagate": False}
        },
    }
limit_request_line = 8190


class RedactingLogger(Logger):  # type: ignore[misc]  # gunicorn ships no type hints
    """The access log, with the secret token of callback URLs masked."""

    def atoms(self, resp, req, environ, request_time):  # type: ignore[no-untyped-def]
        atoms = super().atoms(resp, req, environ, request_time)
        for key, value in atoms.items():
            if isinstance(value, str):
                # Secrets out of the request line; control characters out of every field.
                atoms[key] = escape_controls(redact_text(value) if key in ("r", "U") else value)
        return atoms


logger_class = RedactingLogger


def on_starting(server):  # type: ignore[no-untyped-def]
    """The instance's metrics directory starts empty: values of an earlier run do not count."""
    folder = os.environ.get(metrics.MULTIPROC_ENV)
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        for stale in Path(folder).glob("*.db"):
            stale.unlink()


def child_exit(server, worker):  # type: ignore[no-untyped-def]
    """A worker that is gone stops counting in live gauges; its counters keep their totals."""
    metrics.process_gone(worker.pid)


def on_exit(server):  # type: ignore[no-untyped-def]
    folder = os.environ.get(metrics.MULTIPROC_ENV)
    if folder and os.environ.get("RESPAWN_METRICS_DIR_OWNED") == "1":
        shutil.rmtree(folder, ignore_errors=True)


def post_worker_init(worker):  # type: ignore[no-untyped-def]
    """Each web process runs its own dispatcher thread unless RESPAWN_DISPATCHER=off."""
    runtime = get_runtime(worker.wsgi)
    if runtime.settings.dispatcher == "embedded":
        start_background(runtime, dispatchers=runtime.settings.dispatcher_threads)
    # The collector out of the way of callbacks and restarts (app/collector.py).
    PacedCollector().start()
    worker.log.info("Worker ready (pid: %s)", worker.pid)


def worker_exit(server, worker):  # type: ignore[no-untyped-def]
    """A stopping worker applies what it stored and stops its threads before it goes."""
    get_runtime(worker.wsgi).close()
