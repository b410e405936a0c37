"""Test fixtures: a migrated private database (SQLite or PostgreSQL), one rolled-back transaction a test.

TEST_DATABASE_URL chooses the backend: unset -> a SQLite file in a temporary folder; a postgresql:// URL -> a
private database created on that server for this run and dropped afterwards.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Connection, Engine, create_engine, make_url, text
from sqlmodel import Session

from tests import netguard
from tests.factories import TEST_SECRET, UserFactory
from todo_api.config import Settings, normalize_database_url
from todo_api.db import Database, build_engine, get_database
from todo_api.main import create_app
from todo_api.migrations import upgrade


def _create_private_postgres(url: str) -> tuple[str, Callable[[], None]]:
    admin_url = make_url(normalize_database_url(url))
    name = f"todo_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return admin_url.set(database=name).render_as_string(hide_password=False), drop


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def scratch_database_url(tmp_path: Path) -> Iterator[str]:
    """An empty private database on the backend under test (not migrated), for tests that migrate or seed it."""
    requested = os.environ.get("TEST_DATABASE_URL", "")
    if requested.startswith(("postgres://", "postgresql")):
        url, drop = _create_private_postgres(requested)
        yield url
        drop()
    else:
        yield f"sqlite:///{tmp_path / 'scratch.db'}"


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    requested = os.environ.get("TEST_DATABASE_URL", "")
    if requested.startswith(("postgres://", "postgresql")):
        url, drop = _create_private_postgres(requested)
        upgrade(url)
        yield url
        drop()
    else:
        url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'test.db'}"
        upgrade(url)
        yield url


@pytest.fixture(scope="session")
def is_postgres(database_url: str) -> bool:
    return database_url.startswith("postgresql")


def make_settings(database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "DATABASE_URL": database_url,
        "ENVIRONMENT": "test",
        "BETTER_AUTH_SECRET": TEST_SECRET,
        "BCRYPT_ROUNDS": 4,
        "LOG_LEVEL": "WARNING",
        # The suite registers many users from one client; rate-limit tests switch limits on explicitly.
        "RATE_LIMIT_ENABLED": False,
        # The reminder tests run the scheduler themselves (a thread polling a test's uncommitted data helps nobody).
        "REMINDERS_ENABLED": False,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)


@pytest.fixture(scope="session")
def settings(database_url: str) -> Settings:
    return make_settings(database_url)


@pytest.fixture(scope="session")
def engine(settings: Settings) -> Iterator[Engine]:
    engine = build_engine(settings)
    yield engine
    engine.dispose()


@pytest.fixture
def db_session(engine: Engine) -> Iterator[Session]:
    """A session whose commits are savepoints inside one transaction that is rolled back after the test."""
    connection = engine.connect()
    transaction = connection.begin()
    session = Session(bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False)
    yield session
    session.close()
    transaction.rollback()
    connection.close()


class SharedSessionDatabase(Database):
    """Every request's database work runs on the test's one connection (`db_session`'s), each block in a savepoint
    of the transaction rolled back after the test: released when the block ends, rolled back when it raises, as
    `Database` commits or rolls back."""

    def __init__(self, session: Session) -> None:
        self._session = session

    @contextmanager
    def read(self) -> Iterator[Connection]:
        with self.transaction() as connection:
            yield connection

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        connection = self._session.connection()
        with connection.begin_nested():
            yield connection


def use_session(app: FastAPI, session: Session) -> None:
    """Make `app` run every request's database work in `session`."""
    app.dependency_overrides[get_database] = lambda: SharedSessionDatabase(session)


@pytest.fixture(scope="session")
def app(settings: Settings) -> FastAPI:
    return create_app(settings)


@pytest.fixture
def client(app: FastAPI, db_session: Session) -> Iterator[TestClient]:
    use_session(app, db_session)
    with TestClient(app, base_url="http://testserver") as test_client:
        yield test_client
    app.dependency_overrides.clear()


@pytest.fixture
def users(client: TestClient) -> UserFactory:
    return UserFactory(client)


class LiveServer:
    """The real app (real commits, real pool) served by uvicorn on a free loopback port."""

    def __init__(self, app: FastAPI) -> None:
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.url = ""

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("live server did not start")
            time.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    def __exit__(self, *_: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30)


@pytest.fixture
def live_server(settings: Settings) -> Iterator[LiveServer]:
    """For tests that need real concurrency; they commit for real, so they must use unique data."""
    with LiveServer(create_app(settings)) as server:
        yield server


@pytest.fixture
def tmp_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def pytest_configure(config: pytest.Config) -> None:
    """Tests stay on loopback: a connection anywhere else fails the test (tests/netguard.py)."""
    netguard.install()
    config.add_cleanup(netguard.uninstall)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Prints the figures tests measured (`record_property("figure", ...)`), such as outage and recovery times."""
    figures = [
        value
        for report in terminalreporter.getreports("passed")
        for name, value in report.user_properties
        if name == "figure"
    ]
    if figures:
        terminalreporter.write_sep("-", "measured figures")
        for figure in figures:
            terminalreporter.write_line(str(figure))
