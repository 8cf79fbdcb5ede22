"""Receiver throughput: events stored per second by `POST /callbacks/<token>`.

Part 1, in-process through Flask's test client (no sockets: the receiver's own cost), on
each database, posting single events and arrays of 50, new events and re-posted duplicates.
Baseline: a bare Flask route that only parses the JSON body and answers 202, posted the
same bodies in the same rounds. Two references: "raw INSERT" stores the same events as
plain rows with SQLAlchemy Core, one transaction per POST (the storage floor); "parse only"
runs respawn's parse_deliveries alone (no request, no database).

Part 2, over loopback through gunicorn as respawn is deployed (2 workers x 4 gthread
threads), with 4 concurrent clients on keep-alive connections; baseline: the bare route
served by the same gunicorn settings.
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

from flask import Flask, jsonify, request
from flask.testing import FlaskClient
from sqlalchemy import insert
from sqlalchemy.engine import Engine

from app.core.ingest import parse_deliveries
from app.db import make_engine, utcnow
from app.models import Event, Execution
from bench import feed
from bench.common import (
    CALLBACK_TOKEN,
    PROJECT,
    PROJECT_POLICY,
    Context,
    Sample,
    free_port,
    interleave,
    per_second,
    ratio,
    running_app,
    table,
    times,
    us,
)

NAME = "receiver"
TITLE = "Receiver throughput"
BATCH = 50
URL = f"/callbacks/{CALLBACK_TOKEN}"


def bare_app() -> Flask:
    """The baseline: parse the JSON body, answer 202. Also served by gunicorn in part 2."""
    app = Flask("bare_receiver")

    @app.post("/callbacks/<token>")
    def receive(token: str) -> Any:
        body = json.loads(request.get_data())
        count = len(body) if isinstance(body, list) else 1
        return jsonify({"accepted": count, "duplicates": 0}), 202

    @app.get("/healthz")
    def healthz() -> Any:
        return jsonify({"status": "ok"})

    return app


@dataclass
class Bodies:
    """Serialized POST bodies, grouped into one chunk per round."""

    rounds: list[list[bytes]]
    events_per_body: int

    @classmethod
    def of(cls, events: list[dict[str, Any]], per_body: int, rounds: int) -> Bodies:
        if per_body == 1:
            bodies = [json.dumps(e).encode() for e in events]
        else:
            bodies = [json.dumps(c).encode() for c in feed.chunks(events, per_body)]
        per_round = len(bodies) // rounds
        return cls([bodies[i * per_round : (i + 1) * per_round] for i in range(rounds)], per_body)


class Poster:
    """Posts a round's bodies through a test client and checks every answer."""

    def __init__(self, client: FlaskClient, bodies: Bodies) -> None:
        self.client = client
        self.bodies = bodies
        self.accepted = 0
        self.duplicates = 0
        self.failures: dict[int, int] = {}

    def __call__(self, index: int) -> float:
        for body in self.bodies.rounds[index]:
            response = self.client.post(URL, data=body, content_type="application/json")
            if response.status_code != 202:
                self.failures[response.status_code] = self.failures.get(response.status_code, 0) + 1
                continue
            answer = response.get_json()
            self.accepted += answer["accepted"]
            self.duplicates += answer["duplicates"]
        return float(len(self.bodies.rounds[index]) * self.bodies.events_per_body)


class Parser:
    """respawn's parsing alone, no database: JSON, validation, redaction, dedup keys."""

    def __init__(self, bodies: Bodies) -> None:
        self.bodies = bodies

    def __call__(self, index: int) -> float:
        for body in self.bodies.rounds[index]:
            parse_deliveries(json.loads(body), None, 500)
        return float(len(self.bodies.rounds[index]) * self.bodies.events_per_body)


class RawInserter:
    """The storage floor: the same events as rows in `events`, one transaction per body."""

    def __init__(self, engine: Engine, bodies: Bodies) -> None:
        self.engine = engine
        self.bodies = bodies
        self.execution_id = f"raw-{uuid.uuid4().hex}"
        with engine.begin() as connection:
            self.execution_pk = connection.execute(
                insert(Execution)
                .values(execution_id=self.execution_id, status="RUNNING", failed_hosts=[])
                .returning(Execution.id)
            ).scalar_one()

    def __call__(self, index: int) -> float:
        for body in self.bodies.rounds[index]:
            parsed = json.loads(body)
            items = parsed if isinstance(parsed, list) else [parsed]
            now = utcnow()
            rows = [
                {
                    "execution_id": self.execution_id,
                    "execution_pk": self.execution_pk,
                    "run_index": 0,
                    "pending": False,
                    "delivery_key": uuid.uuid4().hex,
                    "kind": "event",
                    "event_type": item["event_type"],
                    "event_id": item["id"],
                    "host": item["message"].get("host"),
                    "event_ms": item["timestamp"],
                    "received_at": now,
                    "payload": item,
                }
                for item in items
            ]
            with self.engine.begin() as connection:
                connection.execute(insert(Event), rows)
        return float(len(self.bodies.rounds[index]) * self.bodies.events_per_body)


def _in_process(ctx: Context, kind: str, seed: int) -> list[list[str]]:
    rounds = ctx.size(12, 3)
    plans = {
        "single events": (1, ctx.size(40, 6)),
        f"arrays of {BATCH}": (BATCH, ctx.size(4, 1)),
    }
    rows: list[list[str]] = []
    instance = ctx.folder("receiver-instance")
    with ctx.databases.database(kind) as url, running_app(url, PROJECT_POLICY, instance) as app:
        raw_engine = make_engine(url)
        try:
            for offset, (mode, (per_body, bodies_per_round)) in enumerate(plans.items()):
                events_needed = per_body * bodies_per_round * rounds
                executions = events_needed // 17 + 2
                runs = feed.feed(executions, seed + offset)
                events = feed.flat(runs)[:events_needed]
                dup_runs = feed.feed(executions, seed + 100 + offset)
                dup_events = feed.flat(dup_runs)[:events_needed]
                new = Bodies.of(events, per_body, rounds)
                dups = Bodies.of(dup_events, per_body, rounds)
                client = app.test_client()
                first_delivery = Poster(client, dups)  # not timed
                for index in range(rounds):
                    first_delivery(index)
                bare = bare_app().test_client()
                respawn_new = Poster(client, new)
                respawn_dup = Poster(client, dups)
                samples = interleave(
                    {
                        "bare route": Poster(bare, new),
                        "raw INSERT": RawInserter(raw_engine, new),
                        "respawn parse only": Parser(new),
                        "respawn, new": respawn_new,
                        "respawn, duplicate": respawn_dup,
                    },
                    rounds,
                )
                base = samples["bare route"]
                for name, sample in samples.items():
                    rows.append(_row(kind, mode, name, sample, base))
                problems = {**respawn_new.failures, **respawn_dup.failures}
                if problems or respawn_dup.accepted or respawn_new.duplicates:
                    rows.append(
                        [
                            kind,
                            mode,
                            f"! unexpected answers {problems}, duplicates accepted "
                            f"{respawn_dup.accepted}, new seen as duplicates "
                            f"{respawn_new.duplicates}",
                            "",
                            "",
                            "",
                        ]
                    )
        finally:
            raw_engine.dispose()
    return rows


def _row(kind: str, mode: str, name: str, sample: Sample, base: Sample) -> list[str]:
    return [
        kind,
        mode,
        name,
        per_second(sample.rate),
        us(sample.median),
        "1 (baseline)" if sample is base else times(ratio(sample, base)),
    ]


# --- part 2: gunicorn -----------------------------------------------------------------------


def _wait_ready(port: int, process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            detail = (
                process.stderr.read().decode(errors="replace")[-2000:] if process.stderr else ""
            )
            raise RuntimeError(f"gunicorn exited with {process.returncode}:\n{detail}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/healthz")
            if connection.getresponse().status == 200:
                connection.close()
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError("gunicorn did not answer /healthz in time")


@contextmanager
def gunicorn(target: str, env: dict[str, str]) -> Iterator[int]:
    """`target` served by gunicorn as app/gunicorn_conf.py sets it up (access log off)."""
    port = free_port()
    argv = [
        sys.executable, "-m", "gunicorn",
        "--bind", f"127.0.0.1:{port}",
        "--workers", "2", "--threads", "4", "--worker-class", "gthread",
        "--keep-alive", "5", "--timeout", "60", "--no-control-socket",
        target,
    ]  # fmt: skip
    process = subprocess.Popen(
        argv, cwd=PROJECT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        _wait_ready(port, process)
        yield port
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()


class Blaster:
    """Concurrent clients, one keep-alive connection each, posting a round's bodies."""

    def __init__(self, port: int, per_client: list[Bodies]) -> None:
        self.port = port
        self.per_client = per_client
        self.accepted = 0
        self.errors: dict[int, int] = {}
        self._lock = threading.Lock()

    def _client(self, bodies: list[bytes], barrier: threading.Barrier) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        accepted = 0
        barrier.wait()
        for body in bodies:
            headers = {"Content-Type": "application/json"}
            connection.request("POST", URL, body=body, headers=headers)
            response = connection.getresponse()
            data = response.read()
            if response.status == 202:
                accepted += json.loads(data)["accepted"]
            else:
                with self._lock:
                    self.errors[response.status] = self.errors.get(response.status, 0) + 1
        connection.close()
        with self._lock:
            self.accepted += accepted

    def __call__(self, index: int) -> float:
        # The clients connect first; the timed part starts when all are ready (the barrier).
        barrier = threading.Barrier(len(self.per_client))
        threads = [
            threading.Thread(target=self._client, args=(bodies.rounds[index], barrier))
            for bodies in self.per_client
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return float(sum(len(b.rounds[index]) * b.events_per_body for b in self.per_client))


def _respawn_env(base_env: dict[str, str], url: str) -> dict[str, str]:
    return {
        **base_env,
        "RESPAWN_DATABASE_URL": url,
        "RESPAWN_CALLBACK_TOKENS": CALLBACK_TOKEN,
        "RESPAWN_SECRET_KEY": secrets.token_hex(16),
        "RESPAWN_DISPATCHER": "off",
        "RESPAWN_POLICY_FILE": str(PROJECT_POLICY),
        "RESPAWN_LOG_LEVEL": "WARNING",
    }


def _served(ctx: Context, seed: int) -> list[list[str]]:
    """All servers up at once (idle ones cost nothing); rounds rotate between them."""
    clients = 4
    rounds = ctx.size(8, 2)
    plans = {f"arrays of {BATCH}": (BATCH, ctx.size(2, 1))}
    if not ctx.quick:
        plans = {"single events": (1, 20), **plans}
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("RESPAWN_")}
    base_env["PYTHONPATH"] = str(PROJECT)
    rows: list[list[str]] = []
    with ExitStack() as stack:
        ports = {"bare route": stack.enter_context(gunicorn("bench.receiver:bare_app()", base_env))}
        for kind in ctx.databases.kinds:
            url = stack.enter_context(ctx.databases.database(kind))
            ports[kind] = stack.enter_context(
                gunicorn("app:create_app()", _respawn_env(base_env, url))
            )
        for offset, (mode, (per_body, bodies_each)) in enumerate(plans.items()):
            events_each = bodies_each * per_body * rounds
            blasters: dict[str, Blaster] = {}
            for n, name in enumerate(ports):
                runs = feed.feed((events_each // 17 + 2) * clients, seed + 10 * n + offset)
                # Each client gets whole executions: one execution's feed comes in order.
                streams: list[list[dict[str, Any]]] = [[] for _ in range(clients)]
                for index, events in enumerate(runs):
                    streams[index % clients].extend(events)
                per_client = [Bodies.of(s[:events_each], per_body, rounds) for s in streams]
                blasters[name] = Blaster(ports[name], per_client)
            samples = interleave(blasters, rounds)
            base = samples["bare route"]
            for name, sample in samples.items():
                blaster = blasters[name]
                if name == "bare route":
                    check = ""
                elif blaster.accepted == sample.total_units and not blaster.errors:
                    check = "all stored"
                else:
                    stored = f"{blaster.accepted:.0f}/{sample.total_units:.0f}"
                    check = f"! stored {stored}, errors {blaster.errors}"
                rows.append(
                    [
                        "gunicorn" + ("" if name == "bare route" else f", {name}"),
                        mode,
                        "bare route" if name == "bare route" else "respawn, new",
                        per_second(sample.rate),
                        us(sample.median),
                        "1 (baseline)" if sample is base else times(ratio(sample, base)),
                        check,
                    ]
                )
    return rows


def run(ctx: Context) -> None:
    seed = 7
    rows: list[list[str]] = []
    for kind in ctx.databases.kinds:
        rows.extend(_in_process(ctx, kind, seed))
    table(
        "Receiver, in-process (Flask test client)",
        ["database", "body", "subject", "events/s", "us/event", "x baseline"],
        rows,
        "x baseline: time per event relative to the bare route (median of per-round ratios).\n"
        "raw INSERT: the same events as plain rows, one transaction per POST (storage floor).\n"
        "parse only: respawn's parse_deliveries (validation, redaction, keys), no request, no DB.\n"
        "respawn: token check, validation, dedup, execution/run/host updates, decisions on\n"
        "failure (policy.yaml), one transaction per POST.",
    )
    served = _served(ctx, seed)
    table(
        "Receiver over loopback: gunicorn 2 workers x 4 threads, 4 concurrent clients",
        ["server", "body", "subject", "events/s", "us/event", "x baseline", "check"],
        served,
        "x baseline: time per event relative to the bare route under the same gunicorn.",
    )
