"""The wiring between Flask and respawn's runtime, with typed accessors for the web layer.

`init_app` attaches one `Runtime` to the app (`app.extensions["respawn"]`) and closes the
request's database session on teardown. Views reach the settings, policy, engine and the
dispatcher's wake-up through the functions here, never through string keys of their own.
"""

from __future__ import annotations

from flask import Flask, current_app, g, request
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from app.config import Settings
from app.core.policy_source import LoadedPolicy, PolicySource
from app.db import read_only
from app.runtime import Runtime

EXTENSION = "respawn"


def init_app(app: Flask, runtime: Runtime) -> None:
    app.extensions[EXTENSION] = runtime
    app.teardown_appcontext(_close_session)


def get_runtime(app: Flask | None = None) -> Runtime:
    runtime: Runtime = (app or current_app).extensions[EXTENSION]
    return runtime


def get_settings(app: Flask | None = None) -> Settings:
    return get_runtime(app).settings


def get_engine(app: Flask | None = None) -> Engine:
    return get_runtime(app).engine


def policy_source(app: Flask | None = None) -> PolicySource:
    return get_runtime(app).policy


def current_policy(app: Flask | None = None) -> LoadedPolicy:
    return get_runtime(app).current_policy()


def wake_dispatcher(app: Flask | None = None) -> None:
    """After a commit that queued a restart: this process's dispatcher sends it now."""
    get_runtime(app).wake_background()


def get_session() -> Session:
    """The request's session; closed (and rolled back if uncommitted) on teardown.

    GET and HEAD requests read only: on SQLite their transactions do not take the write lock.
    """
    if "db_session" not in g:
        fresh = get_runtime().sessions()
        if request.method in ("GET", "HEAD"):
            read_only(fresh)
        g.db_session = fresh
    session: Session = g.db_session
    return session


def _close_session(_exc: BaseException | None) -> None:
    session: Session | None = g.pop("db_session", None)
    if session is not None:
        session.close()
