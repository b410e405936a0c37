"""End to end with a real Better Auth server (better-auth 1.7.7 from npm, tests/better_auth_server/):
a user signs up through its HTTP API, and the tokens it mints work here with nothing but settings.

The npm packages are installed on first use into tests/better_auth_server/node_modules (git-ignored);
the test is skipped only when node or npm is not installed.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import unquote

import httpx
import jwt
import pytest
from sqlmodel import Session

from tests.auth.better_auth_frontend import AppFactory, me
from tests.conftest import _create_private_postgres
from tests.factories import PASSWORD, TEST_SECRET, bearer, unique_email
from tests.tasks.helpers import Actor, assert_not_found, create_task, list_tasks, tasks_url

SERVER_DIR = Path(__file__).resolve().parents[1] / "better_auth_server"
INSTALL_STAMP = SERVER_DIR / "node_modules" / ".installed-from-lock"
START_TIMEOUT_SECONDS = 60
UNAUTHORIZED = {"detail": "Could not validate credentials"}


@pytest.fixture(scope="session")
def node_server_dir() -> Path:
    """The Better Auth server's directory with its npm packages installed (`npm ci`, once per lock file)."""
    npm = shutil.which("npm")
    if shutil.which("node") is None or npm is None:
        pytest.skip("node and npm are not installed: cannot run a real better-auth server")
    lock = hashlib.sha256((SERVER_DIR / "package-lock.json").read_bytes()).hexdigest()
    if not INSTALL_STAMP.is_file() or INSTALL_STAMP.read_text() != lock:
        result = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"],
            cwd=SERVER_DIR,
            capture_output=True,
            text=True,
            timeout=1200,
            check=False,
        )
        assert result.returncode == 0, f"npm ci failed:\n{result.stdout}\n{result.stderr}"
        INSTALL_STAMP.write_text(lock)
    return SERVER_DIR


class BetterAuthServer:
    """`node server.mjs`: a stock Better Auth with the jwt and bearer plugins, on a free port of 127.0.0.1."""

    def __init__(self, directory: Path, *, database: str, alg: str, log: Path) -> None:
        env = {**os.environ, "DATABASE": database, "SECRET": TEST_SECRET, "JWT_ALG": alg}
        self.log = log
        with log.open("w") as stderr:
            self.process = subprocess.Popen(
                ["node", "server.mjs"],
                cwd=directory,
                env=env,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
            )
        lines: queue.Queue[str] = queue.Queue()
        self._reader = threading.Thread(target=self._read, args=(lines,), daemon=True)
        self._reader.start()
        try:
            self.url: str = json.loads(lines.get(timeout=START_TIMEOUT_SECONDS))["ready"]
        except (queue.Empty, ValueError, KeyError):
            self.stop()
            raise AssertionError(f"the better-auth server did not start:\n{log.read_text()}") from None
        # Sent like a browser on the frontend's own pages would (Better Auth checks it once cookies are set).
        self.http = httpx.Client(base_url=self.url, timeout=30, headers={"Origin": self.url})

    def _read(self, lines: queue.Queue[str]) -> None:
        assert self.process.stdout is not None
        with self.process.stdout as stdout:
            for line in stdout:
                lines.put(line)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._reader.join(timeout=10)

    def sign_up(self, *, name: str, email: str) -> httpx.Response:
        response = self.http.post("/api/auth/sign-up/email", json={"name": name, "email": email, "password": PASSWORD})
        assert response.status_code == 200, response.text
        return response


@pytest.fixture
def better_auth_database(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """Better Auth's own database, as (URL for node, URL for us): a private PostgreSQL database when the
    suite runs on PostgreSQL, else a SQLite file."""
    requested = os.environ.get("TEST_DATABASE_URL", "")
    if requested.startswith(("postgres://", "postgresql")):
        url, drop = _create_private_postgres(requested)
        yield url.replace("postgresql+psycopg2://", "postgresql://", 1), url
        drop()
    else:
        path = tmp_path / "better-auth.db"
        yield str(path), f"sqlite:///{path}"


@pytest.fixture
def start_server(
    node_server_dir: Path, better_auth_database: tuple[str, str], tmp_path: Path
) -> Iterator[Callable[[str], BetterAuthServer]]:
    servers: list[BetterAuthServer] = []

    def start(alg: str) -> BetterAuthServer:
        log = tmp_path / f"better-auth-{len(servers)}.log"
        servers.append(BetterAuthServer(node_server_dir, database=better_auth_database[0], alg=alg, log=log))
        return servers[-1]

    yield start
    for server in servers:
        server.http.close()
        server.stop()


@pytest.fixture
def apps(database_url: str, db_session: Session) -> Iterator[AppFactory]:
    with AppFactory(database_url, db_session) as factory:
        yield factory


@pytest.mark.parametrize("alg", ["EdDSA", "ES256", "RS256", "PS256", "ES512"])
def test_tokens_minted_by_a_real_better_auth_server(
    start_server: Callable[[str], BetterAuthServer],
    better_auth_database: tuple[str, str],
    apps: AppFactory,
    alg: str,
) -> None:
    frontend = start_server(alg)
    # Only settings: where the frontend is, and (for session tokens) where its database is.
    client = apps.client(
        BETTER_AUTH_URL=frontend.url,
        BETTER_AUTH_SESSION_LOOKUP=True,
        BETTER_AUTH_DATABASE_URL=better_auth_database[1],
    )
    email = unique_email("Real")
    signed_up = frontend.sign_up(name="Real Frontend User", email=email)
    user_id = signed_up.json()["user"]["id"]
    raw_session = signed_up.json()["token"]
    signed_session = signed_up.headers["set-auth-token"]  # the bearer plugin's header
    cookie_value = signed_up.cookies["better-auth.session_token"]  # URL-encoded, as a browser keeps it
    assert unquote(cookie_value) == signed_session and signed_session.startswith(raw_session + ".")

    minted = frontend.http.get("/api/auth/token", headers=bearer(signed_session))
    assert minted.status_code == 200, minted.text
    token = minted.json()["token"]
    assert jwt.get_unverified_header(token)["alg"] == alg

    # The JWT works on every task route, and the user is the frontend's.
    body = me(client, token).json()
    assert (body["id"], body["email"], body["name"]) == (user_id, email.lower(), "Real Frontend User")
    owner = Actor(id=user_id, headers=bearer(token))
    task = create_task(client, owner, title="From a real frontend")
    url = tasks_url(user_id, task["id"])
    assert client.get(url, headers=owner.headers).status_code == 200
    assert client.put(url, headers=owner.headers, json={"title": "Renamed"}).status_code == 200
    assert client.patch(url, headers=owner.headers, json={"priority": "high"}).status_code == 200
    assert client.patch(tasks_url("me", task["id"], complete=True), headers=owner.headers).json()["completed"]

    # Every form of its session token reaches the same user and tasks.
    for session_token in (signed_session, cookie_value, raw_session):
        actor = Actor(id=user_id, headers=bearer(session_token))
        assert [t["id"] for t in list_tasks(client, actor)] == [task["id"]]

    # The JWT the plugin hands out with a session (`set-auth-jwt`) works too.
    session = frontend.http.get("/api/auth/get-session", headers=bearer(signed_session))
    assert session.status_code == 200, session.text
    assert me(client, session.headers["set-auth-jwt"]).json()["id"] == user_id

    # Someone else signed up on the same frontend sees none of it.
    other = frontend.sign_up(name="Other", email=unique_email("other"))
    other_actor = Actor(id=other.json()["user"]["id"], headers=bearer(other.headers["set-auth-token"]))
    assert_not_found(client.get(url, headers=other_actor.headers))
    assert list_tasks(client, other_actor) == []

    # Signing out on the frontend ends the session here on the next request.
    signed_out = frontend.http.post("/api/auth/sign-out", headers=bearer(signed_session))
    assert signed_out.status_code == 200, signed_out.text
    response = me(client, signed_session)
    assert response.status_code == 401 and response.json() == UNAUTHORIZED
    assert client.delete(url, headers=owner.headers).status_code == 204  # a JWT lives until its `exp`
