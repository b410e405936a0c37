"""Runs the Alembic migrations (the only way the schema changes), shipped in this package, against a database URL."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect, text

from todo_api.config import get_settings, normalize_database_url

# env.py, script.py.mako and versions/ sit beside this file, so an installed wheel carries them (no alembic.ini).
SCRIPT_LOCATION = Path(__file__).resolve().parent
VERSION_TABLE = "alembic_version"  # Alembic's default, which env.py keeps


class SchemaNotCurrent(Exception):
    """The database is not at the schema this version of the code expects (the message says what to do)."""


def alembic_config(url: str | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(SCRIPT_LOCATION))
    database_url = normalize_database_url(url or get_settings().DATABASE_URL)
    # ConfigParser treats % as interpolation; URL-encoded passwords contain it.
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade(url: str | None = None, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str | None = None, revision: str = "base") -> None:
    command.downgrade(alembic_config(url), revision)


def check_schema(connection: Connection) -> None:
    """Raise SchemaNotCurrent unless the database is at the newest revision (`todo-api migrate` has nothing to do).

    Only reads: for the commands that must never change the schema themselves (`purge-trash`).
    """
    heads = set(ScriptDirectory(str(SCRIPT_LOCATION)).get_heads())
    current: set[str] = set()
    # Read directly: Alembic's MigrationContext would log two INFO lines into a cron job's output on every run.
    if inspect(connection).has_table(VERSION_TABLE):
        current = set(connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars())
    if current == heads:
        return
    if not current:
        raise SchemaNotCurrent("the database is not migrated: run `todo-api migrate`")
    raise SchemaNotCurrent(
        f"the database schema is at revision {', '.join(sorted(current))}, this version needs "
        f"{', '.join(sorted(heads))}: run `todo-api migrate`"
    )
