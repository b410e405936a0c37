"""Database faults, for real: a private PostgreSQL is stopped, black-holed, exhausted, locked and killed.

Never the shared server the rest of the suite uses: the cluster is `initdb`-ed into a temporary folder, run as the
`postgres` user, on its own loopback port, with fsync on. The apps here commit for real (no rolled-back session).
Durations are measured and reported at the end of the run; the only timing rule asserted is "no hung request":
every answer comes within the configured timeouts plus a generous margin.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psycopg2
import pytest
from fastapi.testclient import TestClient

from tests.conftest import LiveServer, free_port, make_settings
from tests.factories import PASSWORD, RegisteredUser, UserFactory, bearer, unique_email
from todo_api.main import create_app
from todo_api.migrations import upgrade

PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))
# initdb and postgres refuse to run as root.
AS_POSTGRES = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
UNAVAILABLE = {"detail": "Service temporarily unavailable, please retry"}
# "No hung request": an answer may take the configured timeouts plus this much.
MARGIN = 5.0

pytestmark = pytest.mark.skipif(
    not (PG_BIN / "initdb").exists(), reason=f"PostgreSQL server binaries not found in {PG_BIN} (set PG_BIN)"
)


class PrivatePostgres:
    """A throwaway PostgreSQL cluster: its own folder, its own port, stopped and started at will."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "data"
        self.port = free_port()
        self.url = f"postgresql://root@127.0.0.1:{self.port}/todo"

    def _pg(self, program: str, *args: str) -> None:
        subprocess.run(
            [*AS_POSTGRES, str(PG_BIN / program), *args], check=True, capture_output=True, cwd=self.root, timeout=60
        )

    def create(self) -> None:
        # --no-sync only skips flushing initdb's own files; the server below runs with fsync on.
        self._pg("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        self.start()
        admin = psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres")
        admin.autocommit = True
        with admin.cursor() as cursor:
            cursor.execute("CREATE ROLE root SUPERUSER LOGIN")
            cursor.execute("CREATE DATABASE todo OWNER root")
        admin.close()
        upgrade(self.url)

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=on -c synchronous_commit=on"
        self._pg("pg_ctl", "start", "-D", str(self.data), "-l", str(self.root / "server.log"), "-w", "-o", options)

    def stop(self, mode: str = "fast") -> None:
        self._pg("pg_ctl", "stop", "-D", str(self.data), "-m", mode, "-w")

    def kill(self) -> None:
        """Crash-stop: every server process quits at once, no checkpoint; the next start replays the WAL."""
        self.stop("immediate")

    @property
    def running(self) -> bool:
        status = subprocess.run(
            [*AS_POSTGRES, str(PG_BIN / "pg_ctl"), "status", "-D", str(self.data)], capture_output=True, timeout=30
        )
        return status.returncode == 0

    def connect(self) -> Any:
        return psycopg2.connect(host="127.0.0.1", port=self.port, user="root", dbname="todo")

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Runs one statement in its own committed transaction (behind the app's back) and returns its rows."""
        connection = self.connect()
        try:
            with connection, connection.cursor() as cursor:
                cursor.execute(sql, params)
                return cursor.fetchall() if cursor.description else []
        finally:
            connection.close()


@pytest.fixture(scope="session")
def private_postgres() -> Iterator[PrivatePostgres]:
    root = Path(tempfile.mkdtemp(prefix="todo-pg-"))
    if AS_POSTGRES:
        shutil.chown(root, "postgres", "postgres")
    cluster = PrivatePostgres(root)
    try:
        cluster.create()
        yield cluster
    finally:
        if (cluster.data / "postmaster.pid").exists():
            cluster.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def pg(private_postgres: PrivatePostgres) -> PrivatePostgres:
    """The private cluster, running (a previous test may have left it stopped by failing half-way)."""
    if not private_postgres.running:
        private_postgres.start()
    return private_postgres


@pytest.fixture
def figures(record_property: Callable[[str, object], None]) -> Callable[[str, str], None]:
    """Records a measured figure; the run prints them all at the end."""
    return lambda name, value: record_property("figure", f"{name}: {value}")


def timed(call: Callable[[], httpx.Response]) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = call()
    return response, time.monotonic() - started


def assert_unavailable(response: httpx.Response, name: str = "") -> None:
    assert response.status_code == 503, (name, response.status_code, response.text)
    assert response.json() == UNAVAILABLE
    assert response.headers["retry-after"] == "5"


def register(client: TestClient | httpx.Client) -> RegisteredUser:
    return UserFactory(client).create()  # type: ignore[arg-type]  # any client with .post


def routes_needing_the_database(
    client: TestClient, user: RegisteredUser, task_id: int
) -> dict[str, Callable[[], httpx.Response]]:
    headers = user.headers
    return {
        "register": lambda: client.post(
            "/api/auth/register", json={"name": "Late", "email": unique_email(), "password": PASSWORD}
        ),
        "login": lambda: client.post("/api/auth/login", json={"email": user.email, "password": PASSWORD}),
        "token": lambda: client.post("/api/auth/token", data={"username": user.email, "password": PASSWORD}),
        "me": lambda: client.get("/api/auth/me", headers=headers),
        "list": lambda: client.get("/api/me/tasks", headers=headers),
        "create": lambda: client.post("/api/me/tasks", json={"title": "during the outage"}, headers=headers),
        "get": lambda: client.get(f"/api/me/tasks/{task_id}", headers=headers),
        "put": lambda: client.put(f"/api/me/tasks/{task_id}", json={"title": "renamed"}, headers=headers),
        "patch": lambda: client.patch(f"/api/me/tasks/{task_id}", json={"priority": "high"}, headers=headers),
        "complete": lambda: client.patch(f"/api/me/tasks/{task_id}/complete", headers=headers),
        "delete": lambda: client.delete(f"/api/me/tasks/{task_id}", headers=headers),
    }


def test_database_stopped_answers_503_everywhere_then_recovers_without_restart(
    pg: PrivatePostgres, figures: Callable[[str, str], None], caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(pg.url, DB_CONNECT_TIMEOUT=2)
    limit = 2 * settings.DB_CONNECT_TIMEOUT + MARGIN  # a dead pooled connection, then a new one
    with TestClient(create_app(settings)) as client:
        user = register(client)
        task = client.post("/api/me/tasks", json={"title": "before the outage"}, headers=user.headers).json()
        pg.stop("fast")
        try:
            durations = []
            for name, call in routes_needing_the_database(client, user, task["id"]).items():
                response, seconds = timed(call)
                assert_unavailable(response, name)  # /me included: a 503, never a 401
                assert seconds < limit, (name, seconds)
                durations.append(seconds)
            assert client.get("/health").json() == {"status": "healthy"}
            ready = client.get("/health/ready")
            assert ready.status_code == 503
            assert ready.headers["retry-after"] == "5"
        finally:
            pg.start()
        # One log line per failed request, naming the route and the cause, never the SQL, parameters or secrets.
        lines = [record.getMessage() for record in caplog.records if record.name == "todo_api.errors"]
        assert len(lines) == len(durations)
        assert any(line.startswith("database unavailable: GET /api/{user_id}/tasks/{task_id}: ") for line in lines)
        for line in lines:
            assert not [text for text in (user.email, PASSWORD, user.token, "SELECT", "INSERT", "\n") if text in line]
        # The very next request succeeds, on every route, with the same app (pooled connections replaced).
        response, recovery = timed(lambda: client.get(f"/api/me/tasks/{task['id']}", headers=user.headers))
        assert response.status_code == 200, response.text
        assert response.json()["title"] == "before the outage"
        expected = {"register": 201, "create": 201, "delete": 204}
        for name, call in routes_needing_the_database(client, user, task["id"]).items():
            response = call()
            assert response.status_code == expected.get(name, 200), (name, response.text)
        assert client.get("/health/ready").status_code == 200
    figures("stopped: answers", f"{len(durations)}/{len(durations)} routes 503, slowest {max(durations):.3f} s")
    figures("stopped: first request after start", f"200 in {recovery:.3f} s, no restart; then every route 2xx")


def test_without_pre_ping_a_dropped_connection_costs_no_request(pg: PrivatePostgres) -> None:
    settings = make_settings(pg.url, DB_POOL_PRE_PING=False, DB_POOL_SIZE=1, DB_MAX_OVERFLOW=0)
    with TestClient(create_app(settings)) as client:
        user = register(client)
        # The pooled connection is dead and nothing checks it first: the statement that finds out runs again on a
        # new connection (a read's, and a transaction's first), and the client sees a normal answer.
        for call in (
            lambda: client.get("/api/me/tasks", headers=user.headers),
            lambda: client.post("/api/me/tasks", json={"title": "after a restart"}, headers=user.headers),
            lambda: client.get("/api/auth/me", headers=user.headers),
        ):
            pg.stop("fast")
            pg.start()
            assert call().status_code in (200, 201)
        assert [task["title"] for task in client.get("/api/me/tasks", headers=user.headers).json()] == [
            "after a restart"
        ]


def test_pre_ping_probes_only_connections_idle_past_the_threshold(pg: PrivatePostgres) -> None:
    settings = make_settings(pg.url, DB_POOL_SIZE=1, DB_MAX_OVERFLOW=0, DB_POOL_PING_IDLE=0.5)
    app = create_app(settings)
    engine = app.state.engine
    pings: list[object] = []
    real_ping = engine.dialect.do_ping

    def counted_ping(dbapi_connection: object) -> bool:
        pings.append(dbapi_connection)
        return bool(real_ping(dbapi_connection))

    engine.dialect.do_ping = counted_ping
    with TestClient(app) as client:
        user = register(client)
        for _ in range(3):  # back to back: the connection has just answered, nothing to probe
            assert client.get("/api/me/tasks", headers=user.headers).status_code == 200
        assert pings == []
        time.sleep(0.6)
        assert client.get("/api/me/tasks", headers=user.headers).status_code == 200
        assert len(pings) == 1
        # Dropped while idle (a server restart, a NAT or pooler timing out): the probe finds out and the request
        # gets a new connection instead of a 503.
        pg.stop("fast")
        pg.start()
        time.sleep(0.6)
        assert client.get("/api/me/tasks", headers=user.headers).status_code == 200
        assert len(pings) == 2


def test_a_genuine_database_bug_is_still_a_500(pg: PrivatePostgres) -> None:
    settings = make_settings(pg.url)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        user = register(client)
        # A task to list: with none, the listing answers from the per-user counts without reading tasks.
        assert client.post("/api/me/tasks", headers=user.headers, json={"title": "t"}).status_code == 201
        pg.query("ALTER TABLE tasks RENAME COLUMN title TO renamed_title")  # schema drift
        try:
            response = client.get("/api/me/tasks", headers=user.headers)  # ProgrammingError: no such column
        finally:
            pg.query("ALTER TABLE tasks RENAME COLUMN renamed_title TO title")
    assert response.status_code == 500
    assert response.json() == {"detail": "Internal Server Error"}


class BlackHoleProxy:
    """A loopback TCP proxy in front of the cluster that can go silent: it still accepts connections and takes
    every byte, but passes nothing on in either direction, like a server or pooler that hangs."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.silent = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._accept, daemon=True)]

    def __enter__(self) -> BlackHoleProxy:
        self._threads[0].start()
        return self

    def __exit__(self, *_: object) -> None:
        _shutdown(self.listener)  # wakes the blocked accept(); close() alone would not
        self.listener.close()
        with self._lock:
            for sock in self._sockets:
                _shutdown(sock)
        for thread in self._threads:
            thread.join(timeout=5)
        with self._lock:
            for sock in self._sockets:
                sock.close()

    def _keep(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            self._keep(client)
            if self.silent:
                continue  # accepted, then never a byte back
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                _shutdown(client)
                continue
            self._keep(upstream)
            for source, sink in ((client, upstream), (upstream, client)):
                pump = threading.Thread(target=self._pump, args=(source, sink), daemon=True)
                with self._lock:
                    self._threads.append(pump)
                pump.start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                if not self.silent:
                    sink.sendall(chunk)
        except OSError:
            pass
        _shutdown(source)
        _shutdown(sink)


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def test_black_holed_database_answers_503_within_the_connect_timeout(
    pg: PrivatePostgres, figures: Callable[[str, str], None]
) -> None:
    with BlackHoleProxy(pg.port) as proxy:
        settings = make_settings(
            f"postgresql://root@127.0.0.1:{proxy.port}/todo", DB_CONNECT_TIMEOUT=2, DB_STATEMENT_TIMEOUT=2
        )
        # A read (autocommit, no BEGIN) may be a statement running up to the statement timeout; everything else
        # (connecting, BEGIN, the pre-ping) must be answered within the connect timeout.
        read_limit = settings.DB_STATEMENT_TIMEOUT + 2 * settings.DB_CONNECT_TIMEOUT + MARGIN
        limit = 2 * settings.DB_CONNECT_TIMEOUT + MARGIN
        with TestClient(create_app(settings)) as client:
            user = register(client)
            assert client.post("/api/me/tasks", json={"title": "t"}, headers=user.headers).status_code == 201
            proxy.silent = True
            # The pooled connection's traffic goes nowhere: the read times out, and the pool replaces the connection.
            pooled, pooled_seconds = timed(lambda: client.get("/api/me/tasks", headers=user.headers))
            assert_unavailable(pooled)
            assert pooled_seconds < read_limit
            # Nothing left in the pool: a new connection, accepted and never answered.
            fresh, fresh_seconds = timed(lambda: client.get("/api/auth/me", headers=user.headers))
            assert_unavailable(fresh)
            assert fresh_seconds < limit
            ready, ready_seconds = timed(lambda: client.get("/health/ready"))
            assert ready.status_code == 503
            assert ready_seconds < limit
            assert client.get("/health").status_code == 200
            proxy.silent = False
            response, recovery = timed(lambda: client.get("/api/me/tasks", headers=user.headers))
            assert response.status_code == 200, response.text
            assert [task["title"] for task in response.json()] == ["t"]
            # A write on a pooled connection: its BEGIN gets no answer within the connect timeout.
            proxy.silent = True
            write, write_seconds = timed(
                lambda: client.post("/api/me/tasks", json={"title": "u"}, headers=user.headers)
            )
            assert_unavailable(write)
            assert write_seconds < limit
            proxy.silent = False
    figures(
        "black hole: pooled connection",
        f"read 503 in {pooled_seconds:.2f} s, write 503 in {write_seconds:.2f} s "
        "(DB_CONNECT_TIMEOUT=2, DB_STATEMENT_TIMEOUT=2)",
    )
    figures("black hole: new connection", f"503 in {fresh_seconds:.2f} s; /health/ready 503 in {ready_seconds:.2f} s")
    figures("black hole: first request after it answers again", f"200 in {recovery:.3f} s")


def test_exhausted_pool_answers_503_after_the_pool_timeout(
    pg: PrivatePostgres, figures: Callable[[str, str], None]
) -> None:
    settings = make_settings(pg.url, DB_POOL_SIZE=1, DB_MAX_OVERFLOW=0, DB_POOL_TIMEOUT=1)
    app = create_app(settings)
    with TestClient(app) as client:
        user = register(client)
        held = app.state.engine.connect()  # the only connection
        try:
            durations = []
            for name in ("list", "me", "login", "create"):
                response, seconds = timed(routes_needing_the_database(client, user, 0)[name])
                assert_unavailable(response, name)
                assert seconds < settings.DB_POOL_TIMEOUT + MARGIN
                durations.append(seconds)
            assert client.get("/health/ready").status_code == 503
        finally:
            held.close()
        assert client.get("/api/me/tasks", headers=user.headers).status_code == 200
    figures(
        "pool exhausted",
        (f"{len(durations)} requests 503 in {min(durations):.2f}-{max(durations):.2f} s (DB_POOL_TIMEOUT=1)"),
    )


@pytest.mark.parametrize("pooler", [False, True], ids=["direct", "transaction-pooler"])
def test_slow_query_is_cut_by_the_statement_timeout_and_the_pool_recovers(
    pg: PrivatePostgres, figures: Callable[[str, str], None], pooler: bool
) -> None:
    settings = make_settings(pg.url, DB_STATEMENT_TIMEOUT=2, DB_TRANSACTION_POOLER=pooler)
    app = create_app(settings)
    with TestClient(app) as client:
        user = register(client)
        assert client.post("/api/me/tasks", json={"title": "t"}, headers=user.headers).status_code == 201
        locker = pg.connect()
        try:
            with locker.cursor() as cursor:
                cursor.execute("LOCK TABLE tasks IN ACCESS EXCLUSIVE MODE")  # held until rollback
            durations = []
            for name in ("list", "create"):
                response, seconds = timed(routes_needing_the_database(client, user, 0)[name])
                assert_unavailable(response, name)
                assert seconds < settings.DB_STATEMENT_TIMEOUT + MARGIN
                durations.append(seconds)
        finally:
            locker.rollback()
            locker.close()
        response = client.get("/api/me/tasks", headers=user.headers)
        assert response.status_code == 200
        assert [task["title"] for task in response.json()] == ["t"]
        assert app.state.engine.pool.checkedout() == 0

        # Through a transaction pooler the timeout lives in each transaction (SET LOCAL), never in the session;
        # a direct connection gets it once, as a startup parameter.
        with app.state.engine.connect() as connection:
            assert connection.exec_driver_sql("SHOW statement_timeout").scalar() == "2s"
        raw = app.state.engine.raw_connection()
        try:
            cursor = raw.cursor()
            cursor.execute("SHOW statement_timeout")
            assert cursor.fetchone() == (("0",) if pooler else ("2s",))
        finally:
            raw.close()
    mode = "transaction pooler" if pooler else "direct"
    figures(
        f"slow query ({mode})",
        f"503 in {min(durations):.2f}-{max(durations):.2f} s (DB_STATEMENT_TIMEOUT=2), then 200",
    )


@pytest.mark.parametrize("pooler", [False, True], ids=["direct", "transaction-pooler"])
def test_timestamps_are_utc_whatever_the_servers_time_zone(pg: PrivatePostgres, pooler: bool) -> None:
    # Timestamps are read without a conversion per value on PostgreSQL (`UTCDateTime`): every session is pinned
    # to UTC. A server whose default time zone is another must not show through.
    admin = pg.connect()
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute("ALTER DATABASE todo SET TimeZone = 'Asia/Kolkata'")
    try:
        app = create_app(make_settings(pg.url, DB_TRANSACTION_POOLER=pooler))
        with TestClient(app) as client:
            user = register(client)
            created = client.post(
                "/api/me/tasks", json={"title": "t", "due_date": "2026-12-01T10:00:00+01:00"}, headers=user.headers
            )
            assert created.status_code == 201
            task = created.json()
            assert task["due_date"] == "2026-12-01T09:00:00Z"
            assert task["created_at"].endswith("Z")
            for response in (
                client.get(f"/api/me/tasks/{task['id']}", headers=user.headers),
                client.get("/api/me/tasks", headers=user.headers),
            ):
                assert response.status_code == 200
                read = response.json()
                assert (read[0] if isinstance(read, list) else read) == task
            with app.state.engine.connect() as connection:
                assert connection.exec_driver_sql("SHOW TimeZone").scalar() == "UTC"
            # What a new session of this server sees, without the pin:
            assert pg.query("SELECT due_date::text FROM tasks WHERE id = %s", (task["id"],)) == [
                ("2026-12-01 14:30:00+05:30",)
            ]
    finally:
        with admin.cursor() as cursor:
            cursor.execute("ALTER DATABASE todo RESET TimeZone")
        admin.close()


def test_no_acknowledged_write_is_lost_when_postgres_is_killed_under_load(
    pg: PrivatePostgres, figures: Callable[[str, str], None]
) -> None:
    writers = 8
    settings = make_settings(pg.url, DB_CONNECT_TIMEOUT=2)
    with LiveServer(create_app(settings)) as server:
        with server.client() as http:
            users = [register(http) for _ in range(writers)]
        run = uuid.uuid4().hex[:8]
        stop = threading.Event()
        lock = threading.Lock()
        acknowledged: dict[str, int] = {}  # title -> id, for every 201
        statuses: dict[int, int] = {}
        failures: list[str] = []
        created_at: list[float] = []

        def write(number: int, user: RegisteredUser) -> None:
            with server.client() as http:
                sequence = 0
                while not stop.is_set():
                    title = f"{run}-{number}-{sequence}"
                    sequence += 1
                    try:
                        response = http.post("/api/me/tasks", json={"title": title}, headers=bearer(user.token))
                    except httpx.HTTPError as exc:  # a hung or dropped request: counted as a failure
                        with lock:
                            failures.append(f"{title}: {exc!r}")
                        continue
                    with lock:
                        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                        if response.status_code == 201:
                            acknowledged[title] = response.json()["id"]
                            created_at.append(time.monotonic())
                    if response.status_code == 503:
                        time.sleep(0.02)  # a polite client backs off a little

        threads = [threading.Thread(target=write, args=(n, user)) for n, user in enumerate(users)]
        for thread in threads:
            thread.start()
        try:
            _wait_for(lambda: len(acknowledged) >= 100, seconds=30)
            before = len(acknowledged)
            pg.kill()
            killed = time.monotonic()
            time.sleep(0.5)  # requests meet a dead database meanwhile
            pg.start()
            restarted = time.monotonic()
            _wait_for(lambda: len(acknowledged) >= before + 100, seconds=30)
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=30)

    assert not failures, failures[:5]
    assert set(statuses) <= {201, 503}, statuses  # never a 500
    assert statuses.get(503, 0) > 0  # the outage was seen

    stored: dict[str, list[int]] = {}
    for title, task_id in pg.query("SELECT title, id FROM tasks WHERE title LIKE %s", (f"{run}-%",)):
        stored.setdefault(title, []).append(task_id)
    missing = [title for title in acknowledged if title not in stored]
    assert not missing, missing[:5]
    assert all(stored[title] == [task_id] for title, task_id in acknowledged.items())  # exactly once, same id
    assert all(len(ids) == 1 for ids in stored.values())

    first_after = min((t for t in created_at if t > restarted), default=float("nan"))
    figures(
        "kill -m immediate under load",
        (
            f"{len(acknowledged)} writes acknowledged (201), {len(acknowledged)} found exactly once, 0 lost; "
            f"{len(stored) - len(acknowledged)} stored but answered 503 (commit outcome unknown to the client); "
            f"statuses {dict(sorted(statuses.items()))}"
        ),
    )
    figures(
        "kill: first 201 after restart",
        (f"{first_after - restarted:.3f} s after pg_ctl start returned ({restarted - killed:.2f} s after the kill)"),
    )


def _wait_for(condition: Callable[[], bool], *, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.01)


# ------------------------------------------------------------------------------------ dropped connections
# PostgreSQL closes the service's pooled connections from its side (a compute restart, a failover, a pooler restart,
# pg_terminate_backend). A statement that can be run again safely is, once, on a new connection: every statement of
# a read, and the first statement of a transaction (nothing of it can have taken effect). A later one, or the COMMIT,
# is a 503 (its outcome may be unknown); with an Idempotency-Key the client's retry settles it.


def terminate_backends(pg: PrivatePostgres) -> int:
    """pg_terminate_backend of every client backend of the `todo` database but this query's own; how many."""
    rows = pg.query(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE datname = 'todo' AND pid <> pg_backend_pid() AND backend_type = 'client backend') AS killed"
    )
    return int(rows[0][0])


def _task_titles(pg: PrivatePostgres, prefix: str) -> list[str]:
    return [title for (title,) in pg.query("SELECT title FROM tasks WHERE title LIKE %s ORDER BY id", (f"{prefix}%",))]


def test_after_every_pooled_connection_is_terminated_the_next_requests_all_succeed(pg: PrivatePostgres) -> None:
    settings = make_settings(pg.url)  # pre-ping as by default: only for connections idle over a second
    with LiveServer(create_app(settings)) as server, server.client() as http:
        user = register(http)
        task = http.post("/api/me/tasks", json={"title": "kept"}, headers=user.headers).json()
        prefix = f"dropped-{uuid.uuid4().hex[:8]}-"
        # Warm every pooled connection, so that all four are in the pool when the server drops them.
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(lambda _: http.get("/api/me/tasks", headers=user.headers), range(32)))

        assert terminate_backends(pg) >= 1
        reads = [
            http.get(f"/api/me/tasks/{task['id']}", headers=user.headers)
            if n % 2
            else http.get("/api/me/tasks", headers=user.headers)
            for n in range(5)
        ]
        assert [response.status_code for response in reads] == [200] * 5

        assert terminate_backends(pg) >= 1
        creates = [http.post("/api/me/tasks", json={"title": f"{prefix}{n}"}, headers=user.headers) for n in range(5)]
        assert [response.status_code for response in creates] == [201] * 5
        # Each was run once: its first statement failed before it could take effect, and ran again on a new
        # connection.
        assert _task_titles(pg, prefix) == [f"{prefix}{n}" for n in range(5)]

        assert terminate_backends(pg) >= 1
        for call in (
            lambda: http.get("/api/auth/me", headers=user.headers),
            lambda: http.patch(f"/api/me/tasks/{task['id']}", json={"priority": "high"}, headers=user.headers),
            lambda: http.get("/api/me/stats", headers=user.headers),
        ):
            assert call().status_code == 200


def test_through_a_transaction_pooler_a_dropped_connection_costs_no_request(pg: PrivatePostgres) -> None:
    """Through a pooler every block is a transaction that begins with SET LOCAL, where a dead connection shows
    first: the block begins again on a new connection (`Database.transaction`), reads and writes alike."""
    settings = make_settings(pg.url, DB_TRANSACTION_POOLER=True, DB_POOL_PRE_PING=False)
    prefix = f"pooler-{uuid.uuid4().hex[:8]}-"
    with TestClient(create_app(settings)) as client:
        user = register(client)
        for n in range(3):
            assert terminate_backends(pg) >= 1
            assert client.get("/api/me/tasks", headers=user.headers).status_code == 200
            assert terminate_backends(pg) >= 1
            created = client.post("/api/me/tasks", json={"title": f"{prefix}{n}"}, headers=user.headers)
            assert created.status_code == 201, created.text
    assert _task_titles(pg, prefix) == [f"{prefix}{n}" for n in range(3)]


class LoadMix:
    """16 clients doing list, get and create-with-Idempotency-Key against a server until stopped; every 503 of a
    create is retried with its key until it is answered (a polite client, after Retry-After's hint, shortened)."""

    def __init__(self, url: str, users: list[RegisteredUser], task_ids: list[int], clients: int = 16) -> None:
        self.url, self.users, self.task_ids, self.clients = url, users, task_ids, clients
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.reads: dict[int, int] = {}
        self.writes: dict[int, int] = {}
        self.read_failures: list[tuple[float, str]] = []
        self.errors: list[str] = []
        self.keys: set[str] = set()
        self.pending: list[tuple[str, RegisteredUser, str]] = []  # (key, user, title) answered 503, to retry
        self.run = uuid.uuid4().hex[:8]
        self.threads = [threading.Thread(target=self._client, args=(n,)) for n in range(clients)]

    def __enter__(self) -> LoadMix:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=60)

    def _count(self, table: dict[int, int], status: int) -> None:
        with self.lock:
            table[status] = table.get(status, 0) + 1

    def _client(self, number: int) -> None:
        user = self.users[number % len(self.users)]
        task_id = self.task_ids[number % len(self.task_ids)]
        with httpx.Client(base_url=self.url, timeout=30) as http:
            sequence = 0
            while not self.stop.is_set():
                sequence += 1
                kind = sequence % 3
                try:
                    if kind == 0:
                        key = f"{self.run}-{number}-{sequence}"
                        title = f"load-{key}"
                        with self.lock:
                            self.keys.add(key)
                        response = self._create(http, user, key, title)
                        self._count(self.writes, response.status_code)
                        if response.status_code == 503:
                            with self.lock:
                                self.pending.append((key, user, title))
                        continue
                    url = "/api/me/tasks" if kind == 1 else f"/api/me/tasks/{task_id}"
                    response = http.get(url, headers=user.headers)
                    self._count(self.reads, response.status_code)
                    if response.status_code != 200:
                        with self.lock:
                            self.read_failures.append((time.monotonic(), f"{url}: {response.status_code}"))
                except httpx.HTTPError as exc:
                    with self.lock:
                        self.errors.append(repr(exc))

    @staticmethod
    def _create(http: httpx.Client, user: RegisteredUser, key: str, title: str) -> httpx.Response:
        headers = {**user.headers, "Idempotency-Key": key}
        return http.post("/api/me/tasks", json={"title": title}, headers=headers)

    def settle(self) -> None:
        """Retry every create answered 503 with its key until it is answered 201 (the database is up again)."""
        with httpx.Client(base_url=self.url, timeout=30) as http:
            for key, user, title in self.pending:
                for _ in range(50):
                    response = self._create(http, user, key, title)
                    if response.status_code == 201:
                        break
                    assert response.status_code == 503, response.text
                    time.sleep(0.1)
                else:
                    raise AssertionError(f"{key} never succeeded")


def _load_users(http: httpx.Client) -> tuple[list[RegisteredUser], list[int]]:
    users = [register(http) for _ in range(4)]
    task_ids = [http.post("/api/me/tasks", json={"title": "read me"}, headers=u.headers).json()["id"] for u in users]
    return users, task_ids


def _assert_exactly_once(pg: PrivatePostgres, load: LoadMix) -> int:
    stored = pg.query("SELECT title, count(*) FROM tasks WHERE title LIKE %s GROUP BY title", (f"load-{load.run}-%",))
    assert all(count == 1 for _, count in stored), [row for row in stored if row[1] != 1][:5]
    assert {title for title, _ in stored} == {f"load-{key}" for key in load.keys}
    return len(stored)


def test_under_load_terminating_every_backend_each_second_loses_no_read_and_no_write(
    pg: PrivatePostgres, figures: Callable[[str, str], None]
) -> None:
    settings = make_settings(pg.url, DB_CONNECT_TIMEOUT=2)
    with LiveServer(create_app(settings)) as server:
        with server.client() as http:
            users, task_ids = _load_users(http)
        terminated = 0
        with LoadMix(server.url, users, task_ids) as load:
            for _ in range(10):
                time.sleep(1)
                terminated += terminate_backends(pg)
        load.settle()
    assert not load.errors, load.errors[:5]
    assert set(load.reads) == {200}, (load.reads, load.read_failures[:5])  # zero non-2xx reads
    assert set(load.writes) <= {201, 503}, load.writes
    stored = _assert_exactly_once(pg, load)
    figures(
        "terminate every backend each second, 10 s, 16 clients",
        f"{terminated} backends terminated; reads {load.reads}; creates {load.writes}; "
        f"{len(load.pending)} retried with their key; {stored} tasks for {len(load.keys)} keys, each once",
    )


def test_a_fast_restart_under_load_fails_reads_only_while_the_server_is_down(
    pg: PrivatePostgres, figures: Callable[[str, str], None]
) -> None:
    settings = make_settings(pg.url, DB_CONNECT_TIMEOUT=2)
    with LiveServer(create_app(settings)) as server:
        with server.client() as http:
            users, task_ids = _load_users(http)
        with LoadMix(server.url, users, task_ids) as load:
            time.sleep(1)
            stopping = time.monotonic()
            pg.stop("fast")
            pg.start()
            accepting = time.monotonic()  # pg_ctl start -w returns once the server accepts connections
            time.sleep(2)
        load.settle()
        with server.client() as http:  # the first request after it is back succeeds
            assert http.get("/api/me/tasks", headers=users[0].headers).status_code == 200
    assert not load.errors, load.errors[:5]
    late = [failure for at, failure in load.read_failures if at > accepting + 0.5]
    assert not late, late[:5]  # reads failed only while the server was down (and the answers already under way)
    assert set(load.writes) <= {201, 503}, load.writes
    stored = _assert_exactly_once(pg, load)
    figures(
        "pg_ctl restart -m fast under load",
        f"down {accepting - stopping:.2f} s; reads {load.reads} ({len(load.read_failures)} failed, all while down); "
        f"creates {load.writes}; {stored} tasks for {len(load.keys)} keys, each once",
    )


class DroppingProxy:
    """A TCP proxy in front of the private cluster that, when armed, loses the connection at the first client
    message containing `marker`: before forwarding it, or after the server has answered it (the answer is swallowed):
    a statement that never reached the server, or a COMMIT whose answer was lost."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.armed: tuple[bytes, bool] | None = None
        self.fired = threading.Event()
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def arm(self, marker: bytes, *, after_answer: bool) -> None:
        self.fired.clear()
        self.armed = (marker, after_answer)

    def close(self) -> None:
        self.listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target_port))
            swallow = threading.Event()
            threading.Thread(target=self._upstream, args=(client, server, swallow), daemon=True).start()
            threading.Thread(target=self._downstream, args=(server, client, swallow), daemon=True).start()

    @staticmethod
    def _close(*sockets: socket.socket) -> None:
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def _upstream(self, client: socket.socket, server: socket.socket, swallow: threading.Event) -> None:
        while True:
            try:
                data = client.recv(65536)
            except OSError:
                data = b""
            if not data:
                self._close(client, server)
                return
            with self.lock:
                armed = self.armed
                hit = armed is not None and armed[0] in data
                if hit:
                    self.armed = None
            if hit and armed is not None and not armed[1]:
                self.fired.set()
                self._close(client, server)  # never reached the server
                return
            if hit:
                swallow.set()  # the server gets it; its answer is lost
            try:
                server.sendall(data)
            except OSError:
                self._close(client, server)
                return

    def _downstream(self, server: socket.socket, client: socket.socket, swallow: threading.Event) -> None:
        while True:
            try:
                data = server.recv(65536)
            except OSError:
                data = b""
            if not data or swallow.is_set():
                if swallow.is_set():
                    self.fired.set()
                self._close(client, server)
                return
            try:
                client.sendall(data)
            except OSError:
                self._close(client, server)
                return


@pytest.fixture
def proxy(pg: PrivatePostgres) -> Iterator[DroppingProxy]:
    dropping = DroppingProxy(pg.port)
    yield dropping
    dropping.close()


def test_a_keyed_create_whose_commit_answer_was_lost_is_a_503_and_its_retry_returns_the_first_result(
    pg: PrivatePostgres, proxy: DroppingProxy
) -> None:
    settings = make_settings(f"postgresql://root@127.0.0.1:{proxy.port}/todo")
    title = f"answer-lost-{uuid.uuid4().hex[:8]}"
    with TestClient(create_app(settings)) as client:
        user = register(client)
        headers = {**user.headers, "Idempotency-Key": f"key-{title}"}
        proxy.arm(b"COMMIT", after_answer=True)
        assert_unavailable(client.post("/api/me/tasks", json={"title": title}, headers=headers))
        assert proxy.fired.is_set()
        assert pg.query("SELECT count(*) FROM tasks WHERE title = %s", (title,)) == [(1,)]  # it had committed

        retried = client.post("/api/me/tasks", json={"title": title}, headers=headers)
        assert retried.status_code == 201, retried.text
        assert retried.json()["title"] == title
        assert retried.headers["etag"] == f'"{retried.json()["version"]}"'
        assert pg.query("SELECT count(*) FROM tasks WHERE title = %s", (title,)) == [(1,)]  # not twice
        assert pg.query("SELECT id FROM tasks WHERE title = %s", (title,)) == [(retried.json()["id"],)]


def test_a_keyed_create_whose_insert_never_reached_the_server_is_a_503_and_its_retry_performs_it_once(
    pg: PrivatePostgres, proxy: DroppingProxy
) -> None:
    settings = make_settings(f"postgresql://root@127.0.0.1:{proxy.port}/todo")
    title = f"never-sent-{uuid.uuid4().hex[:8]}"
    with TestClient(create_app(settings)) as client:
        user = register(client)
        headers = {**user.headers, "Idempotency-Key": f"key-{title}"}
        # Not the transaction's first statement (the key's lookup is): the transaction is lost, not run again.
        proxy.arm(b"INSERT INTO tasks", after_answer=False)
        assert_unavailable(client.post("/api/me/tasks", json={"title": title}, headers=headers))
        assert proxy.fired.is_set()
        assert pg.query("SELECT count(*) FROM tasks WHERE title = %s", (title,)) == [(0,)]

        retried = client.post("/api/me/tasks", json={"title": title}, headers=headers)
        assert retried.status_code == 201, retried.text
        again = client.post("/api/me/tasks", json={"title": title}, headers=headers)
        assert (again.status_code, again.json()) == (201, retried.json())
        assert pg.query("SELECT count(*) FROM tasks WHERE title = %s", (title,)) == [(1,)]


def test_with_two_workers_terminated_backends_cost_no_request(pg: PrivatePostgres, tmp_path: Path) -> None:
    from tests.test_migrations_cli import _serving

    prefix = f"two-workers-{uuid.uuid4().hex[:8]}-"
    with _serving(tmp_path, "--workers", "2", DATABASE_URL=pg.url, LOG_LEVEL="WARNING") as (base, _):
        with httpx.Client(base_url=base, timeout=30) as http:
            user = register(http)
        statuses: list[int] = []
        for round_ in range(3):
            # Fresh connections, so that both workers serve (and both hold pooled connections) before each drop.
            for _ in range(16):
                with httpx.Client(base_url=base, timeout=30) as fresh:
                    assert fresh.get("/api/me/tasks", headers=user.headers).status_code == 200
            assert terminate_backends(pg) >= 2
            for n in range(5):
                with httpx.Client(base_url=base, timeout=30) as fresh:
                    statuses.append(fresh.get("/api/me/tasks", headers=user.headers).status_code)
                    title = f"{prefix}{round_}-{n}"
                    statuses.append(
                        fresh.post("/api/me/tasks", json={"title": title}, headers=user.headers).status_code
                    )
    assert statuses == [200, 201] * 15
    assert len(_task_titles(pg, prefix)) == 15
