"""`Database`: on direct PostgreSQL, connections rest in autocommit, so a read commits each statement on its own, while
every other block, session or connection, ours or not, is one transaction as usual (`todo_api.db._autocommit_reads`);
elsewhere a read is one transaction too. A block commits when it ends and rolls back when it raises; an ORM session
on its connection (`orm`) never ends the block's transaction."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, text
from sqlmodel import Session

from todo_api.config import Settings
from todo_api.db import Database, orm, standalone


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

    with pytest.raises(RuntimeError), db.read() as connection:  # each statement committed on its own
        connection.execute(insert, {"n": 1})
        raise RuntimeError
    with db.transaction() as connection:
        connection.execute(insert, {"n": 2})
    with pytest.raises(RuntimeError), db.transaction() as connection:  # the route failed after writing
        connection.execute(insert, {"n": 3})
        raise RuntimeError
    with Session(engine) as session:  # a session made anywhere else: a transaction as usual
        session.execute(insert, {"n": 4})
    with engine.connect() as connection:
        connection.execute(insert, {"n": 5})

    assert _rows(engine, scratch) == [1, 2]
    assert _at_rest(engine)


@pytest.mark.usefixtures("postgres")
def test_a_failed_transaction_is_rolled_back_and_its_connection_goes_back_to_rest(
    engine: Engine, settings: Settings, scratch: str
) -> None:
    db = Database(engine, settings)
    with pytest.raises(Exception, match="division by zero"), db.transaction() as connection:
        connection.execute(text(f"INSERT INTO {scratch} (n) VALUES (1)"))
        connection.execute(text("SELECT 1 / 0"))
    with db.read() as connection:  # the same pool: in autocommit again, not in the failed transaction
        connection.execute(text(f"INSERT INTO {scratch} (n) VALUES (2)"))
    assert _rows(engine, scratch) == [2]
    assert _at_rest(engine)


def test_the_block_owns_the_commit_and_an_orm_session_on_it_never_ends_it(
    engine: Engine, settings: Settings, scratch: str
) -> None:
    """What every route relies on: the block commits what it and an ORM session on its connection wrote (the session
    flushes when it closes, and neither its commit nor its rollback ends the block's transaction), and a block that
    raises keeps nothing (on SQLite a read is such a block too)."""
    db = Database(engine, settings)
    insert = text(f"INSERT INTO {scratch} (n) VALUES (:n)")

    with db.transaction() as connection:
        with orm(connection) as session:
            session.execute(insert, {"n": 1})
            session.commit()  # ends the session's own transaction, not the block's
        connection.execute(insert, {"n": 2})
    with pytest.raises(RuntimeError), db.transaction() as connection:
        with orm(connection) as session:
            session.execute(insert, {"n": 3})
        raise RuntimeError
    with pytest.raises(RuntimeError), db.read() as connection:
        connection.execute(insert, {"n": 4})
        raise RuntimeError  # committed by itself on direct PostgreSQL only

    assert _rows(engine, scratch) == ([1, 2] if settings.is_sqlite else [1, 2, 4])
    if not settings.is_sqlite:
        assert _at_rest(engine)


@pytest.mark.usefixtures("postgres")
def test_a_transaction_begins_with_its_first_statement_unless_that_one_stands_alone(
    engine: Engine, settings: Settings, scratch: str
) -> None:
    """On direct PostgreSQL a block is one transaction all the same (BEGIN goes with its first statement); a block
    whose first statement is `standalone` runs it in autocommit, and any statement after it is refused."""
    db = Database(engine, settings)
    insert = text(f"INSERT INTO {scratch} (n) VALUES (:n)")

    with pytest.raises(RuntimeError, match="after"), db.transaction() as connection:
        connection.execute(insert, {"n": 1})
        connection.execute(insert, {"n": 2})
        raise RuntimeError("after")  # all or nothing: neither is kept
    with db.transaction() as connection:
        connection.execute(insert, {"n": 3})
        in_transaction = connection.connection.dbapi_connection.autocommit is False  # type: ignore[union-attr]
        connection.execute(text("SELECT 1"))
    with db.transaction() as connection:
        connection.execute(standalone(insert), {"n": 4})
        alone = connection.connection.dbapi_connection.autocommit is True  # type: ignore[union-attr]
    with pytest.raises(RuntimeError, match="standalone"), db.transaction() as connection:
        connection.execute(standalone(insert), {"n": 5})  # committed on its own: it stood alone
        connection.execute(insert, {"n": 6})

    assert _rows(engine, scratch) == [3, 4, 5]
    assert (in_transaction, alone) == (True, True)
    assert _at_rest(engine)
