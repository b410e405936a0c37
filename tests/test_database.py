"""`Database`: on direct PostgreSQL, connections rest in autocommit, so a read commits each statement on its own, while
every other session or connection, ours or not, is one transaction as usual (`todo_api.db._autocommit_reads`);
elsewhere a read is one transaction. `Database.connection()` commits what it wrote on either."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, text
from sqlmodel import Session

from todo_api.config import Settings
from todo_api.db import Database


@pytest.fixture
def scratch(engine: Engine) -> Iterator[str]:
    name = f"scratch_{uuid.uuid4().hex[:12]}"
    with engine.begin() as connection:
        connection.execute(text(f"CREATE TABLE {name} (n integer)"))
    yield name
    with engine.begin() as connection:
        connection.execute(text(f"DROP TABLE {name}"))


def _rows(engine: Engine, name: str) -> list[int]:
    with engine.connect() as connection:
        return [n for (n,) in connection.execute(text(f"SELECT n FROM {name} ORDER BY n"))]


def _at_rest(engine: Engine) -> bool:
    with engine.connect() as connection:  # checked out, nothing sent yet
        autocommit: bool = connection.connection.dbapi_connection.autocommit  # type: ignore[union-attr]
        return autocommit


@pytest.fixture
def postgres(settings: Settings) -> None:
    if settings.is_sqlite:
        pytest.skip("reads run in autocommit on PostgreSQL only")


@pytest.mark.usefixtures("postgres")
def test_a_read_commits_each_statement_and_everything_else_is_one_transaction(
    engine: Engine, settings: Settings, scratch: str
) -> None:
    db = Database(engine, settings)
    insert = text(f"INSERT INTO {scratch} (n) VALUES (:n)")

    with db.read() as session:  # never committed: each statement commits on its own
        session.execute(insert, {"n": 1})
    with db.connection() as connection:
        connection.execute(insert, {"n": 2})
    with db.write() as session:  # not committed: rolled back
        session.execute(insert, {"n": 3})
    with db.write() as session:
        session.execute(insert, {"n": 4})
        session.commit()
    with pytest.raises(RuntimeError), db.write() as session:  # the route failed after writing: rolled back
        session.execute(insert, {"n": 5})
        raise RuntimeError
    with Session(engine) as session:  # a session made anywhere else: a transaction as usual
        session.execute(insert, {"n": 6})
    with engine.connect() as connection:
        connection.execute(insert, {"n": 7})

    assert _rows(engine, scratch) == [1, 2, 4]
    assert _at_rest(engine)


@pytest.mark.usefixtures("postgres")
def test_a_failed_write_is_rolled_back_and_its_connection_goes_back_to_rest(
    engine: Engine, settings: Settings, scratch: str
) -> None:
    db = Database(engine, settings)
    with pytest.raises(Exception, match="division by zero"), db.write() as session:
        session.execute(text(f"INSERT INTO {scratch} (n) VALUES (1)"))
        session.execute(text("SELECT 1 / 0"))
    with db.read() as session:  # the same pool: in autocommit again, not in the failed transaction
        session.execute(text(f"INSERT INTO {scratch} (n) VALUES (2)"))
    assert _rows(engine, scratch) == [2]
    assert _at_rest(engine)


def test_a_connection_commits_its_block_and_a_session_on_it_commits_its_own_work(
    engine: Engine, settings: Settings, scratch: str
) -> None:
    """What the hottest routes rely on: their statement is committed, and so is what `Owner.scope` records in an ORM
    session on the connection (a Better Auth user seen for the first time), even when the route then fails."""
    db = Database(engine, settings)
    insert = text(f"INSERT INTO {scratch} (n) VALUES (:n)")

    with db.connection() as connection:
        connection.execute(insert, {"n": 1})
    with pytest.raises(RuntimeError), db.connection() as connection:
        with Session(connection) as session:
            session.execute(insert, {"n": 2})
            session.commit()
        connection.execute(insert, {"n": 3})
        raise RuntimeError  # the route failed: on SQLite its statement is rolled back, what the session committed stays

    assert _rows(engine, scratch) == ([1, 2] if settings.is_sqlite else [1, 2, 3])
    if not settings.is_sqlite:
        assert _at_rest(engine)
