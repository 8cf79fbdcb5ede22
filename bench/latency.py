"""From a FAILURE callback to the restart request arriving at the Runner, through
`respawn serve` with its embedded dispatcher and a zero backoff.

A minimal Runner stand-in on loopback answers the dispatcher's check (the execution is still
FAILURE) and records when each restart request arrives. Failures are posted one after
another, in two ways: back to back (the next once the previous is answered: how restarts
keep up with a stream of failures) and one at a time (the next once the previous restart
arrived and respawn is idle again: what one failure waits). Each one's latency is from just
before its POST to its restart's arrival. The baseline is a bare loopback round trip to the
stand-in (what one restart call costs).
"""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import requests

from bench import feed
from bench.common import CALLBACK_TOKEN, Context, free_port, percentile, table
from bench.ingest import respawn

NAME = "latency"
TITLE = "Failure to restart: callback in, restart request out"
POLICY = """version: 1
defaults: {backoff: {initial: 0s}, max_restarts: 3, deadline: 6h}
limits: {per_job: null, per_account: null, global: null, per_host: null}
circuit_breaker: null
"""
_RESTART = re.compile(r"/jobs/[^/]+/[^/]+/executions/([^/]+)/restart$")
_EXECUTION = re.compile(r"/jobs/([^/]+)/([^/]+)/executions/([^/]+)$")


class StandIn(ThreadingHTTPServer):
    """The Runner, as far as a restart needs it."""

    daemon_threads = True
    request_queue_size = 128  # the default backlog of 5 drops connections under a burst

    def __init__(self, port: int) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.arrivals: dict[str, float] = {}
        self.lock = threading.Lock()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # answer at once: no 40 ms delayed-ACK stalls
    server: StandIn

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _answer(self, body: Any, status: int = 200) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        found = _EXECUTION.search(self.path)
        if found is None:  # the reconciler's listings, job records: nothing to report
            self._answer({"totalSize": 0, "page": 0, "size": 100, "results": []})
            return
        account, job, execution = found.groups()
        self._answer(_document(account, job, execution, "FAILURE"))

    def do_POST(self) -> None:
        arrived = time.monotonic()
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        found = _RESTART.search(self.path)
        if found is None:
            self._answer({"message": "not found"}, 404)
            return
        with self.server.lock:
            self.server.arrivals.setdefault(found.group(1), arrived)
        parts = self.path.split("/")
        self._answer(_document(parts[-5], parts[-4], found.group(1), "PENDING"))


def _document(account: str, job: str, execution: str, status: str) -> dict[str, Any]:
    return {
        "execution_id": execution,
        "job_id": job,
        "account_alias": account,
        "status": status,
        "timers": [{"start": 1_700_000_000_000, "end": 1_700_000_001_000}],
        "failed_hosts": ["web1"],
    }


PACE_SECONDS = 0.05
"""Paced: the next failure this long after the previous restart arrived, when respawn has
recorded the answer and is idle again."""


def _await_restart(standin: StandIn, execution_id: str, timeout: float = 5.0) -> None:
    until = time.monotonic() + timeout
    while execution_id not in standin.arrivals and time.monotonic() < until:
        time.sleep(0.0005)
    time.sleep(PACE_SECONDS)


def _round_trips(url: str, count: int) -> list[float]:
    with requests.Session() as http:
        samples = []
        for _ in range(count):
            start = time.monotonic()
            http.get(url, timeout=5)
            samples.append(time.monotonic() - start)
    return samples


def _measure(
    ctx: Context, kind: str, failures: int, paced: bool = False
) -> tuple[list[float], int]:
    port = free_port()
    standin = StandIn(port)
    thread = threading.Thread(target=standin.serve_forever, daemon=True)
    thread.start()
    folder = ctx.folder(f"latency-{kind}")
    policy = folder / "policy.yaml"
    policy.write_text(POLICY)
    extra = {
        "RESPAWN_RUNNER_API_URL": f"http://127.0.0.1:{port}",
        "RESPAWN_RUNNER_TOKEN": "bench-runner-token-0123456789",
        "RESPAWN_POLICY_FILE": str(policy),
    }
    sent: dict[str, float] = {}
    try:
        with (
            ctx.databases.database(kind) as url,
            respawn(url, folder, folder / "respawn.log", extra=extra) as base,
        ):
            now_ms = int(time.time() * 1000)
            with requests.Session() as http:
                for n in range(failures):
                    body = feed.failed_document(f"latency-{n:05d}", "job-latency", ["web1"], now_ms)
                    sent[body["execution_id"]] = time.monotonic()
                    answer = http.post(f"{base}/callbacks/{CALLBACK_TOKEN}", json=body, timeout=10)
                    answer.raise_for_status()
                    if paced:
                        _await_restart(standin, body["execution_id"])
            deadline = time.monotonic() + 60
            while len(standin.arrivals) < failures and time.monotonic() < deadline:
                time.sleep(0.05)
    finally:
        standin.shutdown()
        standin.server_close()
    latencies = [standin.arrivals[e] - t for e, t in sent.items() if e in standin.arrivals]
    return latencies, failures - len(latencies)


def run(ctx: Context) -> None:
    failures = ctx.size(1000, 150)
    paced = ctx.size(1000, 60)
    rows = []
    for kind in ctx.databases.kinds:
        for mode, count in (("back to back", failures), ("one at a time", paced)):
            latencies, missing = _measure(ctx, kind, count, paced=mode == "one at a time")
            rows.append(
                [
                    kind,
                    mode,
                    f"{len(latencies)}",
                    f"{missing}",
                    f"{1000 * percentile(latencies, 50):.1f}",
                    f"{1000 * percentile(latencies, 99):.1f}",
                    f"{1000 * max(latencies):.1f}",
                ]
            )
    port = free_port()
    standin = StandIn(port)
    threading.Thread(target=standin.serve_forever, daemon=True).start()
    try:
        trips = _round_trips(f"http://127.0.0.1:{port}/", 200)
    finally:
        standin.shutdown()
        standin.server_close()
    rows.append(
        [
            "(baseline)",
            "",
            "200",
            "0",
            f"{1000 * percentile(trips, 50):.1f}",
            f"{1000 * percentile(trips, 99):.1f}",
            f"{1000 * max(trips):.1f}",
        ]
    )
    table(
        f"Failures, zero backoff, embedded dispatcher: {failures} back to back, {paced} one at "
        "a time",
        ["db", "posted", "restarts", "missing", "p50 ms", "p99 ms", "max ms"],
        rows,
        "latency: from just before the FAILURE callback's POST to its restart request's\n"
        "arrival at the Runner stand-in. Back to back: each failure posted once the previous\n"
        "one is answered (respawn's sustained rate); one at a time: once the previous restart\n"
        f"arrived and {1000 * PACE_SECONDS:.0f} ms more (a single failure's latency).\n"
        "Baseline: one loopback request to the stand-in.",
    )
