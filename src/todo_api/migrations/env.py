"""Alembic environment: the URL comes from the caller or DATABASE_URL; the schema from todo_api.models.

Run by `todo_api.migrations` (configured in code) or by the `alembic` command through the repository's alembic.ini.
"""

from __future__ import annotations

from logging.config import fileConfig
from typing import Any

from alembic import context
from sqlalchemy import create_engine, event, pool
from sqlmodel import SQLModel

import todo_api.models  # noqa: F401  (registers every table on SQLModel.metadata)
from todo_api.config import get_settings, normalize_database_url

config = context.config
if config.config_file_name:  # the `alembic` command: its ini file configures logging; the app configures its own
    fileConfig(config.config_file_name)

target_metadata = SQLModel.metadata


def _url() -> str:
    return normalize_database_url(config.get_main_option("sqlalchemy.url") or get_settings().DATABASE_URL)


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    url = _url()
    engine = create_engine(url, poolclass=pool.NullPool)
    sqlite = url.startswith("sqlite")
    if sqlite:
        # Batch migrations rebuild a SQLite table (copy, drop, rename); with foreign keys on, dropping the old
        # table would cascade-delete every referencing row. Keys are checked once the migration is done.
        @event.listens_for(engine, "connect")
        def _foreign_keys_off(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.execute("PRAGMA foreign_keys=OFF")

    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
        if sqlite:
            violations = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
            if violations:
                raise RuntimeError(f"foreign keys broken by the migration: {violations[:5]}")
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
