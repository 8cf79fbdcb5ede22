"""What the commands share: the runtime built from the environment, and closed after."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager

import click
from flask import Flask

from app.config import ConfigError, Settings, load_settings
from app.logging_setup import configure_logging
from app.policy import PolicyError, parse_duration
from app.runtime import Runtime


def positive_duration(_ctx: click.Context, _param: click.Parameter, value: str) -> dt.timedelta:
    """A click callback: a duration such as `30d` or `6h`, longer than nothing."""
    try:
        duration = parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    if not duration:
        raise click.BadParameter("must be longer than 0s")
    return duration


def instance_path() -> str:
    """The instance folder `create_app` uses (where the default SQLite database lives)."""
    return Flask("app").instance_path


def settings_from_env() -> Settings:
    try:
        return load_settings(instance_path=instance_path())
    except ConfigError as exc:
        raise click.ClickException(f"configuration: {exc}") from None


@contextmanager
def runtime_from_env() -> Iterator[Runtime]:
    """The runtime as `respawn serve` would build it; its connections closed on the way out."""
    settings = settings_from_env()
    try:
        runtime = Runtime.from_settings(settings)
    except PolicyError as exc:
        problems = "\n".join(str(p) for p in exc.problems)
        raise click.ClickException(f"the policy file is invalid:\n{problems}") from None
    configure_logging(settings.log_level, settings.log_format)
    try:
        yield runtime
    finally:
        runtime.close()
