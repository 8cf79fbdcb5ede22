"""`respawn db upgrade`: the schema, by the Alembic migrations."""

from __future__ import annotations

import click

from app import migrate
from app.cli.common import instance_path
from app.config import database_url_from_env


@click.group("db")
def db_group() -> None:
    """Database schema."""


@db_group.command("upgrade")
@click.option("--revision", default="head", show_default=True)
def db_upgrade(revision: str) -> None:
    """Run the Alembic migrations up to REVISION (needs only RESPAWN_DATABASE_URL)."""
    url = database_url_from_env(instance_path())
    migrate.upgrade(url, revision)
    click.echo(f"database at revision {migrate.current_revision_name(url)}")
