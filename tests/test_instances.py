"""Real `todo-api serve` processes: two instances sharing PostgreSQL and Redis, several workers, graceful stop."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import redis

from tests.conftest import _create_private_postgres, free_port
from tests.factories import PASSWORD, unique_email
from todo_api.migrations import upgrade

SECRET = "instances-test-secret-of-at-least-32-chars"
REDIS_URL = "redis://127.0.0.1:6379/0"


@contextmanager
def serve(tmp_path: Path, *args: str, **env: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "BETTER_AUTH"))}
    environment.update(
        {"ENVIRONMENT": "production", "BETTER_AUTH_SECRET": SECRET, "LOG_LEVEL": "WARNING", "DOCS_ENABLED": "false"}
    )
    environment.update(env)
    log = tmp_path / f"serve-{port}.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "todo_api", "serve", "--port", str(port), *args],
            cwd=tmp_path,
            env=environment,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.2)
        yield url, process
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=30)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    requested = os.environ.get("TEST_DATABASE_URL", "")
    if not requested.startswith(("postgres://", "postgresql")):
        pytest.skip("several instances share a PostgreSQL server: runs in the PostgreSQL pass of .ci/run")
    url, drop = _create_private_postgres(requested)
    upgrade(url)
    yield url
    drop()


def _metric_total(text: str, route: str) -> float:
    pattern = r'http_requests_total\{method="GET",route="' + re.escape(route) + r'",status="200"\} ([0-9.e+]+)'
    return sum(float(value) for value in re.findall(pattern, text))


def test_two_instances_share_database_tokens_and_limits(tmp_path: Path, postgres_url: str) -> None:
    prefix = f"todo-api-test-{uuid.uuid4().hex[:8]}"
    shared = {
        "DATABASE_URL": postgres_url,
        "RATE_LIMIT_STORAGE_URL": REDIS_URL,
        "RATE_LIMIT_KEY_PREFIX": prefix,
        "RATE_LIMIT_LOGIN": "3/minute",
        "METRICS_ENABLED": "true",
    }
    try:
        with serve(tmp_path, **shared) as (first, _), serve(tmp_path, "--workers", "2", **shared) as (second, _):
            email = unique_email("two")
            registered = httpx.post(
                f"{first}/api/auth/register", json={"name": "Two", "email": email, "password": PASSWORD}
            )
            assert registered.status_code == 201, registered.text
            headers = {"Authorization": f"Bearer {registered.json()['access_token']}"}
            # A token from one instance works on the other; a write on one is read on the other.
            assert httpx.get(f"{second}/api/auth/me", headers=headers).json()["email"] == email
            created = httpx.post(f"{first}/api/me/tasks", headers=headers, json={"title": "written on one"})
            assert created.status_code == 201
            task = httpx.get(f"{second}/api/me/tasks/{created.json()['id']}", headers=headers)
            assert task.status_code == 200 and task.json()["title"] == "written on one"
            # The per-IP login limit is one counter in Redis for both.
            wrong = {"email": email, "password": "not the password"}
            codes = [httpx.post(f"{url}/api/auth/login", json=wrong).status_code for url in (first, second, first)]
            assert codes == [401, 401, 401]
            limited = httpx.post(f"{second}/api/auth/login", json=wrong)
            assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
            # Metrics are right across the second instance's two worker processes.
            with httpx.Client(base_url=second) as client:
                before = _metric_total(client.get("/metrics").text, "/health")
                for _ in range(40):
                    assert client.get("/health").status_code == 200
                after = _metric_total(client.get("/metrics").text, "/health")
            assert after - before == 40
    finally:
        connection = redis.Redis.from_url(REDIS_URL)
        keys = list(connection.scan_iter(f"{prefix}*"))
        if keys:
            connection.delete(*keys)
        connection.close()


def test_sigterm_lets_in_flight_requests_finish(tmp_path: Path) -> None:
    database = tmp_path / "graceful.db"
    env = {"DATABASE_URL": f"sqlite:///{database}", "GRACEFUL_TIMEOUT": "20", "DB_CONNECT_TIMEOUT": "15"}
    with serve(tmp_path, **env) as (url, process):
        registered = httpx.post(
            f"{url}/api/auth/register", json={"name": "G", "email": unique_email("g"), "password": PASSWORD}
        )
        assert "server" not in registered.headers  # the served process names no software
        headers = {"Authorization": f"Bearer {registered.json()['access_token']}"}
        # Hold SQLite's write lock, so the next request is still running when SIGTERM arrives.
        lock = sqlite3.connect(database, isolation_level=None)
        lock.execute("BEGIN IMMEDIATE")
        results: list[httpx.Response] = []
        in_flight = threading.Thread(
            target=lambda: results.append(
                httpx.post(f"{url}/api/me/tasks", headers=headers, json={"title": "in flight"}, timeout=30)
            )
        )
        in_flight.start()
        time.sleep(1)
        process.send_signal(signal.SIGTERM)
        time.sleep(1)
        assert process.poll() is None  # still finishing the request
        lock.execute("COMMIT")
        lock.close()
        in_flight.join(timeout=30)
        process.wait(timeout=30)
    assert [r.status_code for r in results] == [201]
    assert results[0].json()["title"] == "in flight"
    assert process.returncode in (0, -signal.SIGTERM)
