"""Which database errors mean "unavailable, retry" (503) and which are bugs (500)."""

from __future__ import annotations

import psycopg2
import pytest
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError, ProgrammingError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from todo_api.errors import is_database_unavailable


@pytest.mark.parametrize(
    ("error", "unavailable"),
    [
        (OperationalError("SELECT 1", {}, psycopg2.OperationalError("server closed the connection")), True),
        (PoolTimeoutError("QueuePool limit of size 1 overflow 0 reached"), True),
        (
            InterfaceError(
                "SELECT 1", {}, psycopg2.InterfaceError("connection already closed"), connection_invalidated=True
            ),
            True,
        ),
        (InterfaceError("SELECT 1", {}, psycopg2.InterfaceError("cursor already closed")), False),
        (ProgrammingError("SELECT nope", {}, psycopg2.ProgrammingError("column does not exist")), False),
        (IntegrityError("INSERT", {}, psycopg2.IntegrityError("duplicate key")), False),
    ],
)
def test_only_connectivity_failures_are_unavailable(error: Exception, unavailable: bool) -> None:
    assert is_database_unavailable(error) is unavailable
