"""Abuse protection: per-IP and per-email limits, 429 with Retry-After, trusted proxies, Redis shared counters."""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from sqlmodel import Session

from tests.conftest import make_settings, use_session
from tests.factories import PASSWORD, unique_email
from todo_api.main import create_app

REDIS_URL = "redis://127.0.0.1:6379/0"
ClientFactory = Callable[..., Any]


@pytest.fixture
def limited(database_url: str, db_session: Session) -> Iterator[ClientFactory]:
    """Builds apps with rate limits on (and the given settings) sharing the test's rolled-back transaction."""
    clients: list[TestClient] = []

    def build(ip: str = "203.0.113.7", app: Any = None, **overrides: Any) -> TestClient:
        if app is None:
            app = create_app(make_settings(database_url, **{"RATE_LIMIT_ENABLED": True, **overrides}))
            use_session(app, db_session)
        client = TestClient(app, client=(ip, 40000))
        clients.append(client)
        return client

    yield build
    for client in clients:
        client.close()


def login(client: TestClient, email: str, password: str = "wrong password here", **headers: str) -> Any:
    return client.post("/api/auth/login", json={"email": email, "password": password}, headers=headers)


def register(client: TestClient, email: str | None = None) -> Any:
    return client.post(
        "/api/auth/register", json={"name": "Rate", "email": email or unique_email("rl"), "password": PASSWORD}
    )


def assert_limited(response: Any) -> None:
    assert response.status_code == 429, response.text
    retry_after = int(response.headers["retry-after"])
    assert 1 <= retry_after <= 3600
    assert response.json() == {"detail": f"Too many requests; retry in {retry_after} seconds"}


def test_login_per_ip_limit_answers_429_with_retry_after(limited: ClientFactory) -> None:
    client = limited(RATE_LIMIT_LOGIN="3/minute")
    for _ in range(3):
        assert login(client, "nobody@example.com").status_code == 401
    assert_limited(login(client, "nobody@example.com"))
    # Another client IP has its own budget.
    assert login(limited(ip="198.51.100.9", app=client.app), "nobody@example.com").status_code == 401


@pytest.mark.parametrize(
    "header",
    [
        {"X-Forwarded-For": "1.2.3.4"},
        {"X-Real-IP": "1.2.3.4"},
        {"X_FORWARDED_FOR": "1.2.3.4"},
        {"Forwarded": "for=1.2.3.4"},
    ],
)
def test_forwarding_headers_from_untrusted_peers_are_ignored(limited: ClientFactory, header: dict[str, str]) -> None:
    client = limited(RATE_LIMIT_LOGIN="2/minute")
    for i in range(2):
        spoofed = {key: value.replace("4", str(i)) for key, value in header.items()}
        response = client.post("/api/auth/login", json={"email": "x@example.com", "password": "p"}, headers=spoofed)
        assert response.status_code == 401
    assert_limited(client.post("/api/auth/login", json={"email": "x@example.com", "password": "p"}, headers=header))


def test_trusted_proxy_forwarded_address_is_the_client(limited: ClientFactory) -> None:
    client = limited(ip="10.0.0.2", RATE_LIMIT_LOGIN="2/minute", TRUSTED_PROXIES="10.0.0.0/8, 127.0.0.1")
    first = {"X-Forwarded-For": "192.0.2.1"}
    assert login(client, "a@example.com", **first).status_code == 401
    assert login(client, "a@example.com", **first).status_code == 401
    assert_limited(login(client, "a@example.com", **first))
    # The right-most address that is not a trusted proxy counts; what the client prepends is ignored.
    assert_limited(login(client, "a@example.com", **{"X-Forwarded-For": "6.6.6.6, 192.0.2.1, 10.0.0.9"}))
    assert login(client, "a@example.com", **{"X-Forwarded-For": "192.0.2.1, 192.0.2.2"}).status_code == 401


def test_failed_logins_per_email_are_counted_across_ips(limited: ClientFactory) -> None:
    client = limited(RATE_LIMIT_LOGIN="100/minute", RATE_LIMIT_LOGIN_PER_EMAIL="3/hour")
    email = unique_email("victim")
    assert register(client, email).status_code == 201
    for i in range(3):
        assert login(limited(ip=f"198.51.100.{i + 1}", app=client.app), email).status_code == 401
    # Now even the right password from a fresh IP waits for the window to pass.
    assert_limited(login(limited(ip="198.51.100.99", app=client.app), email, PASSWORD))
    # Other accounts are not affected.
    other = unique_email("other")
    assert register(client, other).status_code == 201
    assert login(client, other, PASSWORD).status_code == 200


def test_successful_logins_do_not_use_the_per_email_budget(limited: ClientFactory) -> None:
    client = limited(RATE_LIMIT_LOGIN="100/minute", RATE_LIMIT_LOGIN_PER_EMAIL="2/hour")
    email = unique_email("ok")
    assert register(client, email).status_code == 201
    for _ in range(4):
        assert login(client, email, PASSWORD).status_code == 200


def test_token_route_shares_the_per_email_failure_count(limited: ClientFactory) -> None:
    client = limited(RATE_LIMIT_TOKEN="100/minute", RATE_LIMIT_LOGIN_PER_EMAIL="2/hour")
    email = unique_email("form")
    assert register(client, email).status_code == 201
    for _ in range(2):
        assert client.post("/api/auth/token", data={"username": email, "password": "nope-nope"}).status_code == 401
    assert_limited(client.post("/api/auth/token", data={"username": email, "password": PASSWORD}))


@pytest.mark.parametrize(
    ("setting", "call"),
    [
        ("RATE_LIMIT_REGISTER", lambda c: register(c)),
        ("RATE_LIMIT_TOKEN", lambda c: c.post("/api/auth/token", data={"username": "u@example.com", "password": "x"})),
        ("RATE_LIMIT_REFRESH", lambda c: c.post("/api/auth/refresh", json={"refresh_token": "unknown"})),
        ("RATE_LIMIT_FORGOT_PASSWORD", lambda c: c.post("/api/auth/forgot-password", json={"email": unique_email()})),
        (
            "RATE_LIMIT_RESET_PASSWORD",
            lambda c: c.post("/api/auth/reset-password", json={"token": "x", "new_password": PASSWORD}),
        ),
    ],
)
def test_each_route_limit(limited: ClientFactory, setting: str, call: Callable[[TestClient], Any]) -> None:
    client = limited(**{setting: "2/minute"})
    for _ in range(2):
        assert call(client).status_code != 429
    assert_limited(call(client))


def test_forgot_password_is_limited_per_email(limited: ClientFactory) -> None:
    client = limited(RATE_LIMIT_FORGOT_PASSWORD="100/minute", RATE_LIMIT_FORGOT_PASSWORD_PER_EMAIL="2/hour")
    email = unique_email("inbox")
    for i in range(2):
        other_ip = limited(ip=f"192.0.2.{i + 10}", app=client.app)
        assert other_ip.post("/api/auth/forgot-password", json={"email": email}).status_code == 202
    assert_limited(client.post("/api/auth/forgot-password", json={"email": email.upper()}))
    assert client.post("/api/auth/forgot-password", json={"email": unique_email()}).status_code == 202


def test_limits_can_be_switched_off(limited: ClientFactory) -> None:
    client = limited(RATE_LIMIT_ENABLED=False, RATE_LIMIT_LOGIN="1/minute")
    for _ in range(5):
        assert login(client, "nobody@example.com").status_code == 401


def test_invalid_limit_setting_refuses_to_start(database_url: str) -> None:
    with pytest.raises(ValueError, match="RATE_LIMIT_LOGIN"):
        make_settings(database_url, RATE_LIMIT_LOGIN="lots")


def test_invalid_trusted_proxy_refuses_to_start(database_url: str) -> None:
    with pytest.raises(ValueError, match="TRUSTED_PROXIES"):
        make_settings(database_url, TRUSTED_PROXIES="not-an-ip")


@contextmanager
def redis_prefix() -> Iterator[str]:
    prefix = f"todo-api-test-{uuid.uuid4().hex[:8]}"
    yield prefix
    connection = redis.Redis.from_url(REDIS_URL)
    keys = list(connection.scan_iter(f"{prefix}*"))
    if keys:
        connection.delete(*keys)
    connection.close()


def require_redis() -> None:
    """Redis on loopback, as CI runs it (`.ci/run` starts it and sets REQUIRE_SERVICES=1: a Redis that is down fails
    there). On a fresh machine with only Python, the test is skipped with the reason."""
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=0.5, socket_timeout=0.5).ping()
    except redis.RedisError as exc:
        if os.environ.get("REQUIRE_SERVICES") == "1":
            raise
        pytest.skip(f"no Redis at {REDIS_URL} ({type(exc).__name__}); `.ci/run` starts one")


def test_redis_counters_are_shared_between_instances(limited: ClientFactory) -> None:
    require_redis()
    with redis_prefix() as prefix:
        settings = {
            "RATE_LIMIT_LOGIN": "3/minute",
            "RATE_LIMIT_STORAGE_URL": REDIS_URL,
            "RATE_LIMIT_KEY_PREFIX": prefix,
        }
        first, second = limited(**settings), limited(**settings)
        assert first.app is not second.app
        assert login(first, "shared@example.com").status_code == 401
        assert login(second, "shared@example.com").status_code == 401
        assert login(first, "shared@example.com").status_code == 401
        assert_limited(login(second, "shared@example.com"))
        # The counters live in Redis under the configured prefix.
        assert any(redis.Redis.from_url(REDIS_URL).scan_iter(f"{prefix}*"))


def test_redis_down_falls_back_to_memory(limited: ClientFactory, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="todo_api.ratelimit")
    client = limited(RATE_LIMIT_LOGIN="2/minute", RATE_LIMIT_STORAGE_URL="redis://127.0.0.1:1/0")
    assert login(client, "down@example.com").status_code == 401
    assert login(client, "down@example.com").status_code == 401
    assert_limited(login(client, "down@example.com"))
    assert "rate-limit storage unreachable" in caplog.text
    assert register(client).status_code == 201
