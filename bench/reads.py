"""Read API and admin UI at scale: latency at 100,000 executions, and at 1,000 for contrast.

Each database is seeded in bulk (bench/seed.py), then every page is requested through
Flask's test client in interleaved rounds together with the baseline, `GET /healthz` (the
same stack with no database work). One write rides along: a callback carrying a new failing
run, whose decision counts budgets and host history over the stored record.

Each request's SQL reads are captured and replayed with all rows fetched: how many, their
time, and the plan of the slowest (EXPLAIN on PostgreSQL, EXPLAIN QUERY PLAN on SQLite),
which shows whether it used an index. PostgreSQL is ANALYZEd after seeding (as autovacuum
would soon do); SQLite is left as respawn leaves it (no ANALYZE).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import event
from werkzeug.test import TestResponse

from app.core.queries import encode_cursor
from app.extensions import get_runtime
from bench import feed
from bench.common import (
    API_TOKEN,
    CALLBACK_TOKEN,
    PROJECT_POLICY,
    Context,
    interleave,
    ms,
    ratio,
    running_app,
    table,
    times,
)
from bench.seed import Seeded, seed
from tests.helpers import save_user

NAME = "reads"
TITLE = "Read API and admin UI at scale"
USER, PASSWORD = "bench-viewer", "bench-password-123"
_CSRF = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')
_QUERIES = {"SELECT", "INSERT", "UPDATE", "DELETE", "WITH ("}
CAPTURE_PASSES = 3
BASELINE = "GET /healthz (baseline)"
CALLBACK_PAGE = "callback: a failing run (~20 events)"
CALLBACK_BODIES = 60
BIG_TABLES = {"executions", "events", "execution_runs", "host_failures", "decisions", "restarts"}


@dataclass
class Page:
    name: str
    path: str
    admin: bool = False
    bodies: Iterator[bytes] | None = None
    """For a POST: a fresh body per request."""

    def send(self, client: FlaskClient, headers: dict[str, str]) -> TestResponse:
        if self.bodies is not None:
            body = next(self.bodies)
            return client.post(self.path, data=body, content_type="application/json")
        return client.get(self.path, headers=headers)


@dataclass
class Statements:
    """The SQL queries requests run, captured on the engine: (statement, parameters)."""

    log: list[tuple[str, Any]] = field(default_factory=list)
    enabled: bool = False

    def attach(self, app: Flask) -> None:
        @event.listens_for(get_runtime(app).engine, "before_cursor_execute")
        def _capture(
            conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool
        ) -> None:
            if self.enabled and statement.lstrip()[:6].upper() in _QUERIES:
                self.log.append((statement, params))


def pages(info: Seeded) -> list[Page]:
    assert info.deep_position is not None
    deep = encode_cursor(*info.deep_position)
    # New failing runs, one per request: ~20 events in one array, a decision each.
    runs = feed.feed(CALLBACK_BODIES, seed=info.executions, fail_share=1.0)
    bodies = iter([json.dumps(run).encode() for run in runs])
    return [
        Page("api list, first page", "/api/v1/executions?limit=50"),
        Page("api list, status=FAILURE", "/api/v1/executions?limit=50&status=FAILURE"),
        Page("api list, host filter", f"/api/v1/executions?limit=50&host={info.busy_host}"),
        Page("api list, job filter", f"/api/v1/executions?limit=50&job={info.job}"),
        Page(
            "api list, page at 90% depth",
            "/api/v1/executions?" + urlencode({"limit": 50, "cursor": deep}),
        ),
        Page("api execution detail", f"/api/v1/executions/{info.restarted_execution}"),
        Page("admin list", "/admin/", admin=True),
        Page("admin list, status=FAILURE", "/admin/?status=FAILURE", admin=True),
        Page("admin list, host filter", f"/admin/?host={info.busy_host}", admin=True),
        Page("admin execution detail", f"/admin/executions/{info.restarted_execution}", admin=True),
        Page("admin overview", "/admin/overview", admin=True),
        Page("admin policy", "/admin/policy", admin=True),
        Page(CALLBACK_PAGE, f"/callbacks/{CALLBACK_TOKEN}", bodies=bodies),
    ]


def _log_in(app: Flask) -> tuple[FlaskClient | None, str]:
    """A viewer's session, or None and why (the admin UI is still being finished)."""
    try:
        save_user(app, USER, "viewer", PASSWORD)
        client = app.test_client()
        form = client.get("/admin/login")
        token = _CSRF.search(form.get_data(as_text=True))
        if form.status_code != 200 or token is None:
            return None, f"login page answered {form.status_code}"
        answer = client.post(
            "/admin/login", data={"csrf_token": token.group(1), "name": USER, "password": PASSWORD}
        )
        if answer.status_code != 302:
            return None, f"login answered {answer.status_code}"
        return client, ""
    except Exception as exc:  # noqa: BLE001  (report the admin UI as unavailable, go on)
        return None, f"admin login failed: {type(exc).__name__}: {exc}"


def _requester(
    page: Page, client: FlaskClient, headers: dict[str, str], status: dict[str, int]
) -> Callable[[int], float]:
    def request(_index: int) -> float:
        response = page.send(client, headers)
        response.get_data()
        status[page.name] = response.status_code
        return 1.0

    return request


def _plan(app: Flask, statement: str, params: Any) -> str:
    """A one-line summary of how the database runs `statement`."""
    engine = get_runtime(app).engine
    with engine.connect() as connection:
        if engine.dialect.name == "postgresql":
            rows = connection.exec_driver_sql("EXPLAIN (FORMAT JSON) " + statement, params).scalar()
            plan = rows[0]["Plan"] if isinstance(rows, list) else json.loads(rows)[0]["Plan"]
            return _pg_summary(plan)
        rows = connection.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, params).all()
        return _sqlite_summary([row[-1] for row in rows])


def _pg_summary(plan: dict[str, Any]) -> str:
    parts: list[str] = []

    def walk(node: dict[str, Any]) -> None:
        kind = node["Node Type"]
        relation = node.get("Relation Name")
        if relation:
            index = node.get("Index Name")
            if kind == "Seq Scan" and relation in BIG_TABLES:
                parts.append(f"SEQ SCAN {relation}")
            elif index:
                parts.append(f"{index}" + (" (only)" if kind == "Index Only Scan" else ""))
            else:
                parts.append(f"{kind} {relation}")
        elif kind in ("Sort", "Incremental Sort", "HashAggregate"):
            parts.append(kind.lower())
        for child in node.get("Plans", []):
            walk(child)

    walk(plan)
    return "; ".join(dict.fromkeys(parts))


def _sqlite_summary(details: list[str]) -> str:
    parts = []
    for detail in details:
        match = re.match(r"(SCAN|SEARCH) (\w+)(?: USING (?:COVERING )?INDEX (\w+))?", detail)
        if match is None:
            if "TEMP B-TREE" in detail:
                parts.append("temp b-tree sort")
            continue
        verb, table_name, index = match.groups()
        if index:
            parts.append(index)
        elif verb == "SCAN" and table_name in BIG_TABLES:
            parts.append(f"FULL SCAN {table_name}")
        elif "PRIMARY KEY" in detail or "rowid" in detail:
            parts.append(f"{table_name} by key")
        else:
            parts.append(f"{verb.lower()} {table_name}")
    return "; ".join(dict.fromkeys(parts))


def _profile(
    app: Flask,
    capture: Statements,
    result: Result,
    page: Page,
    client: FlaskClient,
    headers: dict[str, str],
) -> None:
    """The request's statements, each replayed with its parameters and all its rows fetched
    (SQLite computes rows as they are fetched, so timing the execute call alone would miss
    most of a slow query), fastest of a few runs: how many, their total, the slowest one's
    plan and text, and any scan of a big table by any of them."""
    capture.log.clear()
    capture.enabled = True
    page.send(client, headers).get_data()
    capture.enabled = False
    # Only reads are replayed (a POST's writes would not be the same twice).
    statements = [(q, p) for q, p in capture.log if q.lstrip()[:6].upper() in ("SELECT", "WITH (")]
    if not statements:
        return
    engine = get_runtime(app).engine
    fastest = []
    with engine.connect() as connection:
        for statement, params in statements:
            runs = []
            for _ in range(CAPTURE_PASSES):
                began = time.perf_counter()
                connection.exec_driver_sql(statement, params).all()
                runs.append(time.perf_counter() - began)
            fastest.append(min(runs))
        connection.rollback()
    result.statements = len(statements)
    result.db_ms = sum(fastest) * 1000
    slowest = max(range(len(fastest)), key=fastest.__getitem__)
    result.slowest_ms = fastest[slowest] * 1000
    result.slowest_sql = " ".join(statements[slowest][0].split())
    result.plan = _plan(app, *statements[slowest])
    scans = []
    for statement, params in statements:
        scans += [part for part in _plan(app, statement, params).split("; ") if "SCAN" in part]
    result.scans = "; ".join(dict.fromkeys(scans))


@dataclass
class Result:
    kind: str
    size: int
    page: str
    median: float
    p95: float
    ratio: float
    status: int
    statements: int = 0
    db_ms: float = 0.0
    slowest_ms: float = 0.0
    plan: str = ""
    scans: str = ""
    slowest_sql: str = ""


def _measure(ctx: Context, kind: str, size: int) -> tuple[list[Result], Seeded, float]:
    instance = ctx.folder("reads-instance")
    with ctx.databases.database(kind) as url:
        began = time.perf_counter()
        info = seed(url, size)
        seeded_in = time.perf_counter() - began
        with running_app(url, PROJECT_POLICY, instance) as app:
            api = app.test_client()
            admin, why = _log_in(app)
            api_headers = {"Authorization": f"Bearer {API_TOKEN}"}
            chosen = [Page(BASELINE, "/healthz")]
            chosen += [p for p in pages(info) if not p.admin or admin is not None]
            status: dict[str, int] = {}
            subjects = {}
            for page in chosen:
                subjects[page.name] = _requester(
                    page, *_client_for(page, api, admin, api_headers), status
                )
            # One untimed pass warms caches.
            for subject in subjects.values():
                subject(0)
            samples = interleave(subjects, ctx.size(25, 3), budget_seconds=ctx.size(45, 5))
            base = samples[BASELINE]
            results = []
            capture = Statements()
            capture.attach(app)
            for page in chosen:
                sample = samples[page.name]
                result = Result(
                    kind,
                    size,
                    page.name,
                    sample.median,
                    sample.p95,
                    ratio(sample, base),
                    status.get(page.name, 0),
                )
                if page.name != BASELINE:
                    _profile(
                        app, capture, result, page, *_client_for(page, api, admin, api_headers)
                    )
                results.append(result)
            if admin is None:
                nan = float("nan")
                results.append(Result(kind, size, f"admin pages skipped: {why}", nan, nan, nan, 0))
    return results, info, seeded_in


def _client_for(
    page: Page, api: FlaskClient, admin: FlaskClient | None, api_headers: dict[str, str]
) -> tuple[FlaskClient, dict[str, str]]:
    if page.admin and admin is not None:
        return admin, {}
    return api, api_headers if page.path.startswith("/api/") else {}


def _label(size: int) -> str:
    return f"{size // 1000}k" if size >= 1000 and size % 1000 == 0 else str(size)


def run(ctx: Context) -> None:
    large, small = ctx.size(100_000, 2_000), ctx.size(1_000, 200)
    by_key: dict[tuple[str, int, str], Result] = {}
    seeding = []
    for kind in ctx.databases.kinds:
        for size in (small, large):
            results, info, seeded_in = _measure(ctx, kind, size)
            seeding.append(
                [
                    kind,
                    f"{size:,}",
                    f"{seeded_in:.1f}",
                    " ".join(f"{k}={v:,}" for k, v in info.rows.items()),
                ]
            )
            for result in results:
                by_key[(kind, size, result.page)] = result
    table("Seeded data", ["database", "executions", "seconds", "rows"], seeding)
    timing, queries = [], []
    for (kind, size, page), result in by_key.items():
        if size != large:
            continue
        small_result = by_key.get((kind, small, page))
        # Ratio of the two "x healthz" figures: machine drift between the phases cancels out.
        growth = result.ratio / small_result.ratio if small_result else float("nan")
        baseline = page == BASELINE
        timing.append(
            [
                kind,
                page,
                ms(result.median),
                ms(result.p95),
                "1 (baseline)" if baseline else times(result.ratio),
                "1 (baseline)" if baseline else times(small_result.ratio) if small_result else "-",
                times(growth),
                str(result.status or ""),
            ]
        )
        if result.statements:
            queries.append(
                [
                    kind,
                    page,
                    str(result.statements),
                    f"{result.db_ms:.1f}",
                    f"{result.slowest_ms:.1f}",
                    result.plan,
                    result.scans or "none",
                ]
            )
    growth_label = f"{_label(large)}/{_label(small)}"
    table(
        f"Pages at {large:,} executions, and at {small:,}",
        ["database", "page", "median ms", "p95 ms", f"x healthz @{_label(large)}",
         f"x healthz @{_label(small)}", growth_label, "status"],
        timing,
        "x healthz: median time relative to GET /healthz in the same rounds (same app, no DB).\n"
        f"{growth_label}: 'x healthz' at {large:,} executions over the same at {small:,} "
        "(1.0 = flat).",
    )  # fmt: skip
    table(
        f"SQL per page at {large:,} executions",
        ["database", "page", "queries", "db ms", "slowest ms", "plan of the slowest query",
         "big-table scans (any query)"],
        queries,
        "queries: the SQL reads a request makes (a POST's writes are not counted or replayed).\n"
        "db ms: those queries replayed with their parameters, all rows fetched (fastest\n"
        f"of {CAPTURE_PASSES} runs each); the rest of a page's time is Python. --show-sql prints "
        "the slowest query of each page.\n"
        "plan: indexes used; FULL/SEQ SCAN: a whole big table read; sort: an explicit sort.",
    )  # fmt: skip
    if ctx.show_sql:
        for (kind, size, page), result in by_key.items():
            if size == large and result.slowest_sql:
                print(f"\n[{kind}] {page}: {result.slowest_ms:.1f} ms\n  {result.slowest_sql}")
