"""Which database errors mean "unavailable, retry" (503) and which are bugs (500); every error body, byte for byte."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import anyio
import httpx
import psycopg2
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError, ProgrammingError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlmodel import Session
from starlette.types import Message

from tests.conftest import make_settings, use_session
from todo_api.config import Settings
from todo_api.errors import ServiceUnavailable, is_database_unavailable, send_error
from todo_api.main import create_app
from todo_api.middleware import MAX_HEADER_BYTES


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


# ------------------------------------------------------------------------------------------------ bodies, byte for byte
# Every error body and its headers come from errors.py: `error_response` (the handlers) and `send_error` (raw ASGI
# middleware, whose body is `json.dumps`'s, with a space after each separator, as it always was).


def _assert_no_retry_after(response: httpx.Response) -> None:
    assert "retry-after" not in response.headers
    assert "www-authenticate" not in response.headers


def test_declared_body_over_the_limit_is_413_from_the_middleware(client: TestClient, settings: Settings) -> None:
    response = client.post(
        "/api/me/tasks", content=b" " * (settings.MAX_BODY_BYTES + 1), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413
    assert response.content == b'{"detail": "Request body too large"}'
    assert response.headers["content-type"] == "application/json"
    assert response.headers["content-length"] == str(len(response.content))
    _assert_no_retry_after(response)


def test_chunked_body_over_the_limit_is_413_from_the_handler(client: TestClient, settings: Settings) -> None:
    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while FastAPI reads the body
        for _ in range(settings.MAX_BODY_BYTES // 1024 + 1):
            yield b" " * 1024

    response = client.post("/api/me/tasks", content=chunks(), headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert response.content == b'{"detail":"Request body too large"}'
    assert response.headers["content-type"] == "application/json"
    assert response.headers["content-length"] == str(len(response.content))
    _assert_no_retry_after(response)


def test_oversized_headers_are_431_from_the_middleware(client: TestClient) -> None:
    response = client.get("/health", headers={"X-Big": "x" * (MAX_HEADER_BYTES + 1)})
    assert response.status_code == 431
    assert response.content == b'{"detail": "Request header fields too large"}'
    assert response.headers["content-type"] == "application/json"
    assert response.headers["content-length"] == str(len(response.content))
    _assert_no_retry_after(response)


def test_rate_limited_is_429_with_retry_after_and_audited(
    database_url: str, db_session: Session, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(make_settings(database_url, RATE_LIMIT_ENABLED=True, RATE_LIMIT_LOGIN="1/minute"))
    use_session(app, db_session)
    caplog.set_level(logging.INFO, logger="todo_api.audit")
    body = {"email": "nobody@example.com", "password": "wrong password here"}
    with TestClient(app) as client:
        assert client.post("/api/auth/login", json=body).status_code == 401
        response = client.post("/api/auth/login", json=body)
    assert response.status_code == 429
    retry_after = response.headers["retry-after"]
    assert 1 <= int(retry_after) <= 60
    assert response.content == f'{{"detail":"Too many requests; retry in {retry_after} seconds"}}'.encode()
    assert response.headers["content-type"] == "application/json"
    assert response.headers["content-length"] == str(len(response.content))
    limited = [record for record in caplog.records if getattr(record, "event", None) == "rate_limited"]
    assert [(vars(record)["limit"], vars(record)["retry_after"]) for record in limited] == [
        ("rate_limit_login", int(retry_after))
    ]


def test_not_ready_is_503_with_retry_after() -> None:
    # PostgreSQL on a loopback port where nothing listens: connection refused.
    settings = make_settings("postgresql+psycopg2://root@127.0.0.1:1/none", DB_CONNECT_TIMEOUT=2)
    with TestClient(create_app(settings)) as client:
        response = client.get("/health/ready")
    assert response.status_code == 503
    assert response.content == b'{"detail":"Database unavailable"}'
    assert response.headers["content-type"] == "application/json"
    assert response.headers["content-length"] == str(len(response.content))
    assert response.headers["retry-after"] == "5"


def test_send_error_sends_the_errors_own_headers() -> None:
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    anyio.run(send_error, send, ServiceUnavailable("Database unavailable"))
    body = b'{"detail": "Database unavailable"}'
    assert sent == [
        {
            "type": "http.response.start",
            "status": 503,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"retry-after", b"5"),
            ],
        },
        {"type": "http.response.body", "body": body},
    ]
