"""Database engine, per-request sessions, and the column types shared by every table."""

from __future__ import annotations

import functools
import json
import logging
import select
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

import psycopg2
import psycopg2.extensions
from fastapi import Depends, Request
from sqlalchemy import (
    Connection,
    CursorResult,
    DateTime,
    Engine,
    Executable,
    Table,
    create_engine,
    event,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.types import TypeDecorator
from sqlmodel import Session, SQLModel

from todo_api.config import Settings

logger = logging.getLogger(__name__)
S = TypeVar("S", bound=Executable)

# Explicit constraint names, so migrations are reproducible and reversible on every backend.
SQLModel.metadata.naming_convention = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def table(model: type[SQLModel]) -> Table:
    """A table model's Core `Table`, for hot-path statements built once with bind parameters (the ORM's own
    statement building and row loading cost several times the round trip on a one-row query)."""
    return model.metadata.tables[str(model.__tablename__)]


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime | None) -> datetime | None:
    """An aware UTC datetime; a naive one is taken as UTC."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every backend (SQLite keeps no offset, so it is restored on load)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def result_processor(self, dialect: Dialect, coltype: object) -> Any:
        if dialect.name == "postgresql":
            # Every PostgreSQL session of ours has TimeZone UTC (`_postgres_connect_args`, `_postgres_setup`), so
            # psycopg2 returns UTC already: no conversion, and SQLAlchemy then builds rows without a Python call
            # per timestamp (a list of 100 tasks has 300 of them).
            return None
        return super().result_processor(dialect, coltype)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return as_utc(value)


def _sqlite_setup(engine: Engine) -> None:
    # pysqlite's own transaction handling breaks SAVEPOINTs; let SQLAlchemy emit BEGIN itself
    # (the documented recipe), and switch foreign keys on for every connection.
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.close()

    # IMMEDIATE takes the write lock up front: a read-then-write transaction that found another writer
    # would otherwise fail at once with "database is locked" instead of waiting out busy_timeout.
    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


class _BoundedConnection(psycopg2.extensions.connection):
    """A psycopg2 connection that carries how long each wait on the server may last (read by `_wait`)."""

    def __init__(self, dsn: str, *args: Any, opening_timeout: float, reply_timeout: float, **kwargs: Any) -> None:
        # Set before connecting: the connection attempt itself already goes through `_wait`.
        self.opening_timeout = opening_timeout
        self.reply_timeout = reply_timeout
        self.probing = False  # set around the pool's liveness probe (`_ping_idle_connections`)
        super().__init__(dsn, *args, **kwargs)

    # psycopg2 lets go of the GIL for every commit() and rollback(), even with no transaction to end. Under load
    # each of those is a hand-off to another thread and back, which costs more than the call: SQLAlchemy ends every
    # session and every pool check-in with a rollback(), nearly always of nothing.
    def commit(self) -> None:
        if self.closed or self.status != psycopg2.extensions.STATUS_READY:
            super().commit()

    def rollback(self) -> None:
        if self.closed or self.status != psycopg2.extensions.STATUS_READY:
            super().rollback()

    def may_be_working(self) -> bool:
        """Whether the server may be running a statement, which it cancels itself at the statement timeout: in a
        transaction, or an autocommit read (`Database.read`). Otherwise (connecting, BEGIN, COMMIT, the liveness
        probe) it has nothing to do and must answer at once."""
        if self.status == psycopg2.extensions.STATUS_BEGIN:
            return True
        return bool(self.autocommit) and not self.probing


def _wait(conn: Any) -> None:
    """psycopg2's wait for the server, with a deadline (psycopg2 and libpq would otherwise wait forever).

    TCP keepalives and tcp_user_timeout only notice a network that drops packets; a server, proxy or pooler
    that takes the bytes and never answers would still hang a request. When the server has no work to do
    (connecting, the BEGIN that opens a transaction, the pool's pre-ping) it must answer within
    DB_CONNECT_TIMEOUT. When it may be running a statement (in a transaction, or an autocommit read), it cancels
    the statement itself at DB_STATEMENT_TIMEOUT, so the deadline is that plus DB_CONNECT_TIMEOUT. On timeout
    psycopg2 closes the connection; the pool replaces it. (A wait callback rules out COPY and large objects,
    which this service does not use.)
    """
    limit: float | None = None  # connections this module did not make wait as psycopg2 always did
    if isinstance(conn, _BoundedConnection):
        limit = conn.reply_timeout if conn.may_be_working() else conn.opening_timeout
    deadline = time.monotonic() + (limit or 0)
    while True:
        state = conn.poll()
        if state == psycopg2.extensions.POLL_OK:
            return
        if state not in (psycopg2.extensions.POLL_READ, psycopg2.extensions.POLL_WRITE):
            raise psycopg2.OperationalError(f"unexpected state from poll(): {state}")
        poller = select.poll()  # anew each time: the socket changes while libpq tries each address
        poller.register(conn.fileno(), select.POLLIN if state == psycopg2.extensions.POLL_READ else select.POLLOUT)
        if not poller.poll(None if limit is None else max(deadline - time.monotonic(), 0) * 1000):
            raise psycopg2.OperationalError(f"the database server did not answer within {limit:g} seconds")


def _install_wait_callback() -> None:
    current = psycopg2.extensions.get_wait_callback()
    if current is None:
        psycopg2.extensions.set_wait_callback(_wait)
    elif current is not _wait:
        logger.warning("another psycopg2 wait callback is installed: waits on the database are not bounded")


def _postgres_connect_args(settings: Settings) -> dict[str, Any]:
    timeout = settings.DB_CONNECT_TIMEOUT
    args: dict[str, Any] = {
        "connect_timeout": timeout,  # libpq applies it to blocking connects; `_wait` to ours
        "connection_factory": functools.partial(
            _BoundedConnection, opening_timeout=timeout, reply_timeout=settings.DB_STATEMENT_TIMEOUT + timeout
        ),
        # Probe idle pooled connections, so one that a NAT, load balancer or suspended compute dropped without
        # a word is already known dead when it is next checked out (the pre-ping then fails at once).
        "keepalives": 1,
        "keepalives_idle": 30,
        "keepalives_interval": 10,
        "keepalives_count": 3,
    }
    if not settings.behind_transaction_pooler:
        # Direct connections take the statement timeout and the time zone as startup parameters: no round trip per
        # transaction.
        args["options"] = f"-c statement_timeout={round(settings.DB_STATEMENT_TIMEOUT * 1000)} -c TimeZone=UTC"
    if psycopg2.extensions.libpq_version() >= 120000:
        # Data (a query, a keepalive probe) unacknowledged this long closes the connection: a black-holed
        # network fails within about DB_CONNECT_TIMEOUT instead of the kernel's ~15 minutes of retransmits.
        args["tcp_user_timeout"] = timeout * 1000
    return args


def _postgres_setup(engine: Engine, settings: Settings) -> None:
    """Through a transaction-mode pooler, the statement timeout and the time zone are set at the start of every
    transaction."""
    if not settings.behind_transaction_pooler:
        return  # sent once, at connect (`_postgres_connect_args`)
    statement_timeout_ms = round(settings.DB_STATEMENT_TIMEOUT * 1000)

    # Transaction-mode poolers (Neon's -pooler endpoints, PgBouncer) refuse the `options=-c ...` startup
    # parameter and may hand each transaction a different server connection, so a session-level SET would be
    # lost or leak to other clients. The price is one extra statement (a round trip) per transaction.
    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql(f"SET LOCAL statement_timeout = {statement_timeout_ms}; SET LOCAL TimeZone = 'UTC'")


def _json_text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def build_engine(settings: Settings, url: str | None = None) -> Engine:
    url = url or settings.DATABASE_URL
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            # `timeout` is SQLite's busy timeout: how long a connection waits for another one's write lock.
            connect_args={"check_same_thread": False, "timeout": settings.DB_CONNECT_TIMEOUT},
            pool_size=min(settings.DB_POOL_SIZE, SQLITE_CONNECTIONS),
            max_overflow=pool_capacity(settings) - min(settings.DB_POOL_SIZE, SQLITE_CONNECTIONS),
            pool_timeout=settings.DB_POOL_TIMEOUT,
            pool_pre_ping=False,
            # JSON columns stored as PostgreSQL's jsonb prints them, which is how tasks render them (read as text).
            json_serializer=_json_text,
        )
        _sqlite_setup(engine)
        return engine
    _install_wait_callback()
    engine = create_engine(
        url,
        connect_args=_postgres_connect_args(settings),
        pool_size=settings.DB_POOL_SIZE,
        max_overflow=settings.DB_MAX_OVERFLOW,
        pool_timeout=settings.DB_POOL_TIMEOUT,
        pool_recycle=settings.DB_POOL_RECYCLE,
    )
    _postgres_setup(engine, settings)
    if not settings.behind_transaction_pooler:
        _autocommit_reads(engine)
    if settings.DB_POOL_PRE_PING:
        _ping_idle_connections(engine, settings.DB_POOL_PING_IDLE)
    return engine


def _ping_idle_connections(engine: Engine, idle_seconds: float) -> None:
    """SQLAlchemy's `pool_pre_ping`, for connections that sat idle in the pool longer than `idle_seconds`.

    `pool_pre_ping` costs a round trip on every checkout. A connection that answered a moment ago is almost always
    alive, so under load no checkout pings; if the server dropped it since, the statement that finds out is run
    again on a new connection where that is safe (`RetryingConnection`). A connection idle longer is probed, so
    the first request after a quiet spell (a suspended compute, a dropped NAT entry, a black-holed network that
    sends no reset) gets a new connection at once: `DisconnectionError` makes the pool connect anew, as pre-ping
    does.
    """

    @event.listens_for(engine, "checkin")
    def _checkin(_dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checkout(dbapi_connection: Any, record: ConnectionPoolEntry, _proxy: Any) -> None:
        idle_since = record.info.get("idle_since")
        if idle_since is None or time.monotonic() - idle_since <= idle_seconds:
            return  # just made, or just used
        dbapi_connection.probing = True
        try:
            engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as exc:
            raise DisconnectionError("a pooled connection failed its liveness probe") from exc
        finally:
            dbapi_connection.probing = False


SQLITE_CONNECTIONS = 4


def pool_capacity(settings: Settings) -> int:
    """How many connections the pool may hold: DB_POOL_SIZE + DB_MAX_OVERFLOW, and at most four on SQLite, which
    writes one transaction at a time (each begins IMMEDIATE): more would only wait in its busy loop."""
    capacity = settings.DB_POOL_SIZE + settings.DB_MAX_OVERFLOW
    return min(capacity, SQLITE_CONNECTIONS) if settings.is_sqlite else capacity


AUTOCOMMIT_READS = "todo_api_autocommit"  # the execution option that marks `Database.read` connections


def _autocommit_reads(engine: Engine) -> None:
    """On a direct PostgreSQL connection, a read needs no transaction: each statement commits on its own, and
    psycopg2 then sends neither BEGIN nor ROLLBACK, two of the four round trips of a one-task read.

    So connections rest in autocommit (psycopg2's own switch; SQLAlchemy's isolation_level="AUTOCOMMIT" option
    flips it on every checkout and check-in, and each flip lets go of the GIL). Every transaction that is not a
    `Database.read` turns it off before sending anything: this is on the engine, so a session or connection made
    anywhere else is a transaction as usual. Check-in turns it back on after such a transaction.
    """

    @event.listens_for(engine, "connect")
    def _rest_in_autocommit(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.autocommit = True

    @event.listens_for(engine, "begin")
    def _transaction(connection: Any) -> None:
        if not connection.get_execution_options().get(AUTOCOMMIT_READS):
            connection.connection.dbapi_connection.autocommit = False

    @event.listens_for(engine, "checkin")
    def _back_to_rest(dbapi_connection: Any, _record: Any) -> None:
        if dbapi_connection is not None and not dbapi_connection.closed and not dbapi_connection.autocommit:
            dbapi_connection.autocommit = True


STANDALONE = "todo_api_standalone"  # a statement's execution option: complete on its own (`standalone`)
LAZY_BEGIN = "todo_api_lazy_begin"  # `Database.transaction` on direct PostgreSQL: BEGIN with the first statement


def standalone(statement: S) -> S:
    """Mark a statement that is a whole transaction by itself (one INSERT ... RETURNING): when it is the first of a
    `Database.transaction()` block on direct PostgreSQL it runs in autocommit, without the BEGIN and COMMIT round
    trips (a keyless task create is then one round trip, as a read is). A later statement in that block is a bug
    and raises; the same statement later in a block is part of the block's transaction as usual."""
    return statement.execution_options(**{STANDALONE: True})


class RetryingConnection(Connection):
    """A pooled connection that a server which dropped it (a compute or pooler restart, a failover,
    pg_terminate_backend) costs no request where running a statement again is safe, and that begins a transaction
    only when it needs one.

    A statement that fails with a disconnection is run again, once, on a new pooled connection when nothing it
    belongs to can have taken effect:
    - every statement of an autocommit read (`Database.read` on direct PostgreSQL): each commits on its own, and a
      read changes nothing (a Better Auth user's first sighting is an INSERT that tolerates conflicts);
    - the first statement of a block: psycopg2 sends the BEGIN with it, and a server that loses the connection
      rolls back whatever of the transaction it had.
    Not under an ORM session (`orm`: the account routes, where bcrypt dominates), which holds the transaction it
    joined. A later statement of a transaction, or its COMMIT, is not run again: the block's earlier work is gone,
    or its outcome is unknown. That stays a 503 with `Retry-After` (an `Idempotency-Key` makes the client's retry safe).
    No round trip is added to a healthy connection: nothing is probed, the failure is detected and the statement
    retried.

    On direct PostgreSQL, connections rest in autocommit (`_autocommit_reads`) and a transaction block turns it off
    just before its first statement (psycopg2 then sends BEGIN with it), unless that statement is `standalone`.
    """

    _sent = 0  # statements this block has sent
    _alone = False  # the block's first statement was standalone: it ran in autocommit
    in_orm = False  # an ORM session holds the transaction (`orm`): it cannot be swapped under it

    def execute(
        self, statement: Executable, parameters: Any = None, *, execution_options: Any = None
    ) -> CursorResult[Any]:
        options = self.get_execution_options()
        first = self._sent == 0
        self._sent += 1
        lazy = bool(options.get(LAZY_BEGIN))
        if lazy:
            self._begin_lazily(statement, first=first)
        again = (first or (bool(options.get(AUTOCOMMIT_READS)) and not lazy)) and not self.in_orm
        try:
            return super().execute(statement, parameters, execution_options=execution_options)
        except DBAPIError as exc:
            if not (again and exc.connection_invalidated):
                raise
            logger.warning("database connection lost before the statement took effect: running it again")
        self.reopen()
        if lazy:
            self._begin_lazily(statement, first=True)
        return super().execute(statement, parameters, execution_options=execution_options)

    def _begin_lazily(self, statement: Executable, *, first: bool) -> None:
        if self._alone:
            raise RuntimeError("a standalone statement must be the only one of its transaction block")
        if not first:
            return
        if statement.get_execution_options().get(STANDALONE):
            self._alone = True
            return
        self.connection.dbapi_connection.autocommit = False  # type: ignore[union-attr]

    def reopen(self) -> None:
        """After a disconnection: drop the dead connection (and its transaction) and begin anew on another."""
        self.rollback()
        self._alone = False
        options = self.get_execution_options()
        if options.get(LAZY_BEGIN) or not options.get(AUTOCOMMIT_READS):
            self.begin()


class Database:
    """Where a route does its database work: `read()` or `transaction()`, each a Core `Connection` opened and
    closed inside the route's own, single thread-pool hop, so a request holds a connection only while that hop runs.

    FastAPI runs each plain-`def` dependency and the endpoint in separate thread-pool hops, and each hop costs
    more CPU than a small query. So the routes' dependencies are `async def` and do no I/O, and the endpoint opens
    its connection here. That is also why the thread pool and the connection pool cannot wait on each other (the
    stall of the well-known FastAPI template at 64 concurrent requests): a thread holds a connection only while it
    runs, the thread pool is sized to the connection pool (`main.create_app`), and requests beyond it wait in the
    event loop, holding neither.
    """

    def __init__(self, engine: Engine, settings: Settings) -> None:
        self.engine = engine
        # Reads run in autocommit on a direct PostgreSQL connection (`_autocommit_reads`): each statement sees
        # committed data, as it would in a READ COMMITTED transaction, without BEGIN and ROLLBACK round trips.
        # Through a transaction pooler the statement timeout needs a transaction (`SET LOCAL`), and SQLite's
        # transactions are ours (BEGIN IMMEDIATE): there a read is a transaction like any other.
        self._autocommit_reads = not settings.is_sqlite and not settings.behind_transaction_pooler
        self._reads = engine.execution_options(**{AUTOCOMMIT_READS: True})
        self._transactions = engine
        if self._autocommit_reads:
            self._transactions = engine.execution_options(**{AUTOCOMMIT_READS: True, LAZY_BEGIN: True})
        # SQLAlchemy's hook for a Connection subclass is the engine's `_connection_cls`; an option engine does not
        # inherit it.
        for each in {engine, self._reads, self._transactions}:
            each._connection_cls = RetryingConnection
        self.committed: Callable[[frozenset[str]], None] | None = None
        """Called with the users whose rows a transaction changed, after it committed (`changed`)."""

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """For routes that change nothing the client asked to change. On direct PostgreSQL each statement commits
        on its own (so a Better Auth user seen for the first time is recorded); elsewhere the block is one
        transaction, committed when it ends and rolled back when it raises."""
        if not self._autocommit_reads:
            with self.transaction() as connection:
                yield connection
            return
        with self._reads.connect() as connection:
            yield connection

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """One transaction: committed when the block ends, rolled back when it raises. Services never commit.

        On direct PostgreSQL the BEGIN goes with the block's first statement, and a block whose only statement is
        `standalone` needs none (`RetryingConnection`); SQLite begins IMMEDIATE here, and through a transaction pooler
        the statement timeout is set here (`SET LOCAL`), where a dead connection shows before anything else."""
        with self._transactions.connect() as connection:
            try:
                connection.begin()
            except DBAPIError as exc:
                if not (exc.connection_invalidated and isinstance(connection, RetryingConnection)):
                    raise
                connection.reopen()
            try:
                yield connection
                connection.commit()
            finally:
                changed = vars(connection).pop(CHANGED_OWNERS, None)
        if changed and self.committed is not None:
            self.committed(frozenset(changed))


CHANGED_OWNERS = "todo_api_changed_owners"
"""An attribute of a block's `Connection` (not of the pooled DBAPI connection, which outlives the block): the users
whose rows its transaction changed (`changed`)."""


def changed(connection: Connection, user_id: str) -> None:
    """Note that this transaction changes `user_id`'s rows: when it commits, `Database.committed` hears of it (the
    live events, `events.hub`)."""
    vars(connection).setdefault(CHANGED_OWNERS, set()).add(user_id)


@contextmanager
def orm(connection: Connection) -> Iterator[Session]:
    """An ORM session on a block's connection (the account routes, where bcrypt dominates anyway). It never ends
    the block's transaction (`rollback_only`: it neither commits nor begins a savepoint); what it holds is flushed
    when it closes, and the block that opened the connection commits it."""
    retrying = isinstance(connection, RetryingConnection)
    if retrying:
        connection.in_orm = True  # type: ignore[attr-defined]  # checked just above
    try:
        with Session(connection, join_transaction_mode="rollback_only", expire_on_commit=False) as session:
            yield session
            session.flush()
    finally:
        if retrying:
            connection.in_orm = False  # type: ignore[attr-defined]


async def get_database(request: Request) -> Database:
    database: Database = request.app.state.database
    return database


DatabaseDep = Annotated[Database, Depends(get_database)]
