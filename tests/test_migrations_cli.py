"""Migrations are reversible on the test backend; `todo-api` and run_migrations.py work as documented."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path

import httpx
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, create_engine, inspect, text
from sqlmodel import SQLModel

import todo_api.models  # noqa: F401  (every table on SQLModel.metadata)
from tests.conftest import free_port
from todo_api.config import normalize_database_url
from todo_api.migrations import downgrade, upgrade

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_upgrade_downgrade_upgrade(scratch_database_url: str) -> None:
    url = scratch_database_url
    upgrade(url)
    assert {"users", "tasks", "alembic_version"} <= _tables(url)
    downgrade(url, "base")
    assert _tables(url) <= {"alembic_version"}
    upgrade(url)
    assert {"users", "tasks"} <= _tables(url)


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "BETTER_AUTH", "ENVIRONMENT"))}
    env.update({"DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}", "LOG_LEVEL": "WARNING"}, **extra)
    return env


def test_run_migrations_script(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "run_migrations.py")],
        cwd=tmp_path,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert {"users", "tasks"} <= _tables(f"sqlite:///{tmp_path / 'cli.db'}")


def test_cli_migrate(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "todo_api", "migrate"],
        cwd=tmp_path,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert {"users", "tasks"} <= _tables(f"sqlite:///{tmp_path / 'cli.db'}")


def test_cli_serve_migrates_and_serves(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "todo_api", "serve", "--port", str(port)],
            cwd=tmp_path,
            env=_env(tmp_path),
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=2)
                break
            except httpx.TransportError:
                assert process.poll() is None, log.read_text()
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.2)
        assert response.status_code == 200
        assert httpx.get(f"http://127.0.0.1:{port}/docs", timeout=2).status_code == 200
        # uvicorn's trust in forwarded headers from loopback is off: only TRUSTED_PROXIES may change the IP.
        registered = httpx.post(
            f"http://127.0.0.1:{port}/api/auth/register",
            json={"name": "Cli", "email": "cli@example.com", "password": "correct horse battery staple"},
            headers={"X-Forwarded-For": "203.0.113.50"},
            timeout=10,
        )
        assert registered.status_code == 201, registered.text
        token = registered.json()["access_token"]
        sessions = httpx.get(
            f"http://127.0.0.1:{port}/api/auth/sessions", headers={"Authorization": f"Bearer {token}"}, timeout=10
        )
        assert [s["ip"] for s in sessions.json()] == ["127.0.0.1"]
        # The development secret was generated beside the database, not in the repository.
        assert (tmp_path / ".better_auth_secret").exists()
    finally:
        process.terminate()
        process.wait(timeout=20)
    # uvicorn shuts down gracefully, then re-raises the signal it caught.
    assert process.returncode in (0, -signal.SIGTERM)


def test_cli_requires_a_command(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "todo_api"], cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "serve" in result.stderr


def _index_names(engine: Engine) -> set[str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "expression-based index ... can't be reflected" on SQLite
        return {index["name"] for index in inspect(engine).get_indexes("tasks") if index["name"]}


def test_task_querying_migration_upgrades_and_downgrades_existing_tasks(scratch_database_url: str) -> None:
    url = scratch_database_url
    upgrade(url, "0001_initial")
    engine = create_engine(normalize_database_url(url))
    now = datetime.now(UTC)
    task = (
        "INSERT INTO tasks (user_id, title, completed, priority, created_at, updated_at)"
        " VALUES ('u1', :t, :f, 'low', :now, :now)"
    )
    try:
        with engine.begin() as connection:
            connection.execute(
                text("INSERT INTO users (id, name, created_at, updated_at) VALUES ('u1', 'U', :now, :now)"),
                {"now": now},
            )
            for title in ("kept", "trashed", "last"):
                connection.execute(text(task), {"t": title, "f": False, "now": now})
        upgrade(url)
        with engine.begin() as connection:
            rows = connection.execute(text("SELECT title, version, trashed_at FROM tasks ORDER BY id")).all()
            assert [tuple(row) for row in rows] == [
                ("kept", 1, None),
                ("trashed", 1, None),
                ("last", 1, None),
            ]
            # The counts start out right for existing tasks, then the triggers keep them so.
            counts = "SELECT category, priority, completed, trashed, n FROM task_counts WHERE user_id = 'u1'"
            assert [tuple(row) for row in connection.execute(text(counts))] == [("", "low", False, False, 3)]
            connection.execute(text("UPDATE tasks SET trashed_at = :now WHERE title = 'trashed'"), {"now": now})
            connection.execute(text("DELETE FROM tasks WHERE title = 'last'"))
            assert sorted(tuple(row) for row in connection.execute(text(counts))) == [
                ("", "low", False, False, 1),
                ("", "low", False, True, 1),
            ]

        downgrade(url, "0001_initial")
        # Trashed tasks go with the trash; ids are still never reused.
        with engine.begin() as connection:
            assert [row[0] for row in connection.execute(text("SELECT title FROM tasks"))] == ["kept"]
            connection.execute(text(task), {"t": "after", "f": False, "now": now})
            assert connection.execute(text("SELECT id FROM tasks WHERE title = 'after'")).scalar_one() == 4
        assert {c["name"] for c in inspect(engine).get_columns("tasks")}.isdisjoint({"version", "trashed_at"})
        assert "task_counts" not in inspect(engine).get_table_names()
        assert _index_names(engine) == {"ix_tasks_user_id_created_at"}
        upgrade(url)
        assert {"version", "trashed_at"} <= {c["name"] for c in inspect(engine).get_columns("tasks")}
    finally:
        engine.dispose()


def test_search_columns_migration_covers_existing_tasks(scratch_database_url: str) -> None:
    url = scratch_database_url
    upgrade(url, "0005_completed_at_indexes")
    engine = create_engine(normalize_database_url(url))
    now = datetime.now(UTC)
    lowered = "SELECT title_lower, description_lower FROM tasks ORDER BY id"
    try:
        with engine.begin() as connection:
            connection.execute(
                text("INSERT INTO users (id, name, created_at, updated_at) VALUES ('u1', 'U', :now, :now)"),
                {"now": now},
            )
            connection.execute(
                text(
                    "INSERT INTO tasks (user_id, title, description, completed, priority, created_at, updated_at)"
                    " VALUES ('u1', 'Pay INVOICE', :d, false, 'low', :now, :now)"
                ),
                [{"d": "Before the First", "now": now}, {"d": None, "now": now}],
            )
        upgrade(url)
        with engine.begin() as connection:
            assert [tuple(row) for row in connection.execute(text(lowered))] == [
                ("pay invoice", "before the first"),
                ("pay invoice", None),
            ]
        indexes = _index_names(engine)
        if engine.dialect.name == "postgresql":
            assert {"ix_tasks_title_lower_trgm", "ix_tasks_description_lower_trgm"} <= indexes
            assert indexes.isdisjoint({"ix_tasks_title_trgm", "ix_tasks_description_trgm"})

        downgrade(url, "0005_completed_at_indexes")
        assert {c["name"] for c in inspect(engine).get_columns("tasks")}.isdisjoint(
            {"title_lower", "description_lower"}
        )
        indexes = _index_names(engine)
        if engine.dialect.name == "postgresql":
            assert {"ix_tasks_title_trgm", "ix_tasks_description_trgm"} <= indexes
        assert indexes.isdisjoint({"ix_tasks_title_lower_trgm", "ix_tasks_description_lower_trgm"})
        upgrade(url)
        with engine.begin() as connection:
            assert len(connection.execute(text(lowered)).all()) == 2
    finally:
        engine.dispose()


def test_models_match_the_migrations(database_url: str) -> None:
    """The table models and the migrated schema agree (what autogenerate can compare)."""
    engine = create_engine(normalize_database_url(database_url))

    def comparable(obj: object, name: str | None, type_: str, reflected: bool, _: object) -> bool:
        # Indexes on expressions (or with NULLS LAST) are not compared by autogenerate; PostgreSQL-only ones
        # do not exist on SQLite.
        if name in {
            "ix_tasks_live_user_id_priority_rank",
            "ix_tasks_live_user_id_due_date_desc",
            "ix_tasks_live_user_id_category",
            "ix_tasks_live_user_id_title",
        }:
            return False
        if type_ != "index" or reflected:
            return True
        ddl_if = getattr(obj, "_ddl_if", None)
        return ddl_if is None or ddl_if.dialect == engine.dialect.name

    try:
        with engine.connect() as connection, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "expression-based index ... can't be reflected"
            context = MigrationContext.configure(connection, opts={"compare_type": True, "include_object": comparable})
            differences = compare_metadata(context, SQLModel.metadata)
    finally:
        engine.dispose()
    assert differences == []
