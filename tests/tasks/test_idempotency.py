"""Idempotency-Key on task creation: a retry returns the first result, never a second task."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update
from sqlmodel import Session

from tests.conftest import LiveServer
from tests.factories import PASSWORD, RegisteredUser, UserFactory, unique_email
from todo_api.db import utcnow
from todo_api.idempotency import BAD_KEY, KEY_REUSED, IdempotencyRecord


def _create(client: TestClient, user: RegisteredUser, key: str, title: str = "pay rent") -> httpx.Response:
    return client.post("/api/me/tasks", headers={**user.headers, "Idempotency-Key": key}, json={"title": title})


def _titles(client: TestClient, user: RegisteredUser) -> list[str]:
    return [task["title"] for task in client.get("/api/me/tasks", headers=user.headers).json()]


def test_a_retry_returns_the_first_result(client: TestClient, users: UserFactory) -> None:
    user = users.create()
    first = _create(client, user, "retry-1")
    again = _create(client, user, "retry-1")
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert _titles(client, user) == ["pay rent"]


def test_the_same_key_with_another_body_is_refused(client: TestClient, users: UserFactory) -> None:
    user = users.create()
    assert _create(client, user, "k").status_code == 201
    response = _create(client, user, "k", title="something else")
    assert response.status_code == 422
    assert response.json() == {"detail": KEY_REUSED}
    assert _titles(client, user) == ["pay rent"]


def test_keys_are_per_user(client: TestClient, users: UserFactory) -> None:
    alice, bob = users.create(), users.create()
    a, b = _create(client, alice, "shared"), _create(client, bob, "shared")
    assert a.status_code == b.status_code == 201
    assert a.json()["id"] != b.json()["id"] and b.json()["user_id"] == bob.id


def test_without_a_key_every_request_creates(client: TestClient, users: UserFactory) -> None:
    user = users.create()
    for _ in range(2):
        assert client.post("/api/me/tasks", headers=user.headers, json={"title": "t"}).status_code == 201
    assert _titles(client, user) == ["t", "t"]


@pytest.mark.parametrize("key", ["", "x" * 256, "tab\there", "bell\x07"])
def test_invalid_keys_are_refused(client: TestClient, users: UserFactory, key: str) -> None:
    user = users.create()
    response = client.post("/api/me/tasks", headers={**user.headers, "Idempotency-Key": key}, json={"title": "t"})
    assert response.status_code == 422
    assert response.json() == {"detail": BAD_KEY}
    assert _titles(client, user) == []


def test_the_longest_key_works(client: TestClient, users: UserFactory) -> None:
    user = users.create()
    assert _create(client, user, "~" * 255).json() == _create(client, user, "~" * 255).json()


def test_keys_are_forgotten_after_24_hours(client: TestClient, users: UserFactory, db_session: Session) -> None:
    user = users.create()
    first = _create(client, user, "old")
    db_session.execute(update(IdempotencyRecord).values(created_at=utcnow() - timedelta(hours=25)))
    db_session.commit()
    second = _create(client, user, "old")
    assert second.status_code == 201 and second.json()["id"] != first.json()["id"]
    assert _create(client, user, "old").json() == second.json()


def test_concurrent_retries_create_one_task(live_server: LiveServer) -> None:
    with live_server.client() as http:
        registered = http.post(
            "/api/auth/register", json={"name": "I", "email": unique_email("idem"), "password": PASSWORD}
        )
        headers = {"Authorization": f"Bearer {registered.json()['access_token']}", "Idempotency-Key": "once"}
        barrier = threading.Barrier(8)

        def post(_: int) -> tuple[int, int]:
            barrier.wait(timeout=30)
            response = http.post("/api/me/tasks", headers=headers, json={"title": "only once"})
            return response.status_code, response.json()["id"]

        with ThreadPoolExecutor(max_workers=8) as pool:
            results = list(pool.map(post, range(8)))
        assert {status for status, _ in results} == {201}
        assert len({task_id for _, task_id in results}) == 1
        listed = http.get("/api/me/tasks", headers={"Authorization": headers["Authorization"]}).json()
        assert [task["title"] for task in listed] == ["only once"]
