"""The front door's baselines, served by gunicorn with respawn's own settings.

- `parse_app()`: a Flask route that only parses the JSON body and answers 202.
- `naive_app()`: the naive receiver: parse, then one INSERT (an `executemany` for an array)
  and a commit per request, on the database at BENCH_DATABASE_URL, through the same engine
  settings as respawn (SQLite WAL, synchronous=NORMAL; a pooled PostgreSQL engine).
"""

from __future__ import annotations

import json
import os
from typing import Any

from flask import Flask, jsonify, request
from sqlalchemy import JSON, BigInteger, Column, Integer, MetaData, Table, insert
from sqlalchemy.dialects.postgresql import JSONB

from app.db import make_engine

METADATA = MetaData()
NAIVE_EVENTS = Table(
    "naive_events",
    METADATA,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("payload", JSON().with_variant(JSONB(), "postgresql"), nullable=False),
)


def parse_app() -> Flask:
    app = Flask("bench_parse_only")

    @app.post("/callbacks/<token>")
    def receive(token: str) -> Any:
        body = json.loads(request.get_data())
        count = len(body) if isinstance(body, list) else 1
        return jsonify({"accepted": count, "duplicates": 0}), 202

    @app.get("/healthz")
    def healthz() -> Any:
        return jsonify({"status": "ok"})

    return app


def create_naive_table(database_url: str) -> None:
    """The naive receiver's table, made once before it serves: made by each gunicorn worker
    as it boots, two workers raced to create it on PostgreSQL and one failed to boot."""
    engine = make_engine(database_url)
    try:
        METADATA.create_all(engine)
    finally:
        engine.dispose()


def naive_app() -> Flask:
    """Needs its table (`create_naive_table`)."""
    app = Flask("bench_naive_receiver")
    engine = make_engine(os.environ["BENCH_DATABASE_URL"])

    @app.post("/callbacks/<token>")
    def receive(token: str) -> Any:
        body = json.loads(request.get_data())
        items = body if isinstance(body, list) else [body]
        with engine.begin() as connection:
            connection.execute(insert(NAIVE_EVENTS), [{"payload": item} for item in items])
        return jsonify({"accepted": len(items), "duplicates": 0}), 202

    @app.get("/healthz")
    def healthz() -> Any:
        return jsonify({"status": "ok"})

    return app
