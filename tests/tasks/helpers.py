"""Small helpers shared by the task tests: who is calling, creating tasks, and checking responses."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
from fastapi.testclient import TestClient

from tests.factories import UserFactory, bearer, better_auth_token, unique_email

TASK_KEYS = {
    "id",
    "user_id",
    "title",
    "description",
    "completed",
    "status",
    "priority",
    "category",
    "due_date",
    "completed_at",
    "created_at",
    "updated_at",
    "version",
    "trashed_at",
    "tags",
    "checklist",
    "reminders",
    "recurrence",
    "recurrence_basis",
    "time_zone",
    "series_id",
    "next_task_id",
}
NOT_FOUND = {"detail": "Task not found"}
# The largest id a BIGINT can hold: a well-formed id that no task in a test database has.
MISSING_TASK_ID = 2**63 - 1


@dataclass(frozen=True)
class Actor:
    """Someone calling the API: the id the tasks paths use for them and their Authorization header."""

    id: str
    headers: dict[str, str]


def local_actor(users: UserFactory) -> Actor:
    user = users.create()
    return Actor(id=user.id, headers=user.headers)


def better_auth_actor(client: TestClient) -> Actor:
    """A Better Auth frontend user; the service creates them on their first request, which happens here."""
    sub = f"ba_{unique_email('sub').split('@')[0]}"
    headers = bearer(better_auth_token(sub, email=unique_email("ba"), name="Better Auth User"))
    response = client.get("/api/auth/me", headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["id"] == sub
    return Actor(id=sub, headers=headers)


# Who calls and whose data they try to reach: local accounts and Better Auth frontend users, in both roles.
ACTOR_PAIRS = [("local", "local"), ("better_auth", "local"), ("local", "better_auth")]


def new_actor(kind: str, client: TestClient, users: UserFactory) -> Actor:
    return better_auth_actor(client) if kind == "better_auth" else local_actor(users)


def tasks_url(owner: str, task_id: int | str | None = None, *, complete: bool = False) -> str:
    url = f"/api/{owner}/tasks"
    if task_id is not None:
        url += f"/{task_id}"
    if complete:
        url += "/complete"
    return url


def create_task(client: TestClient, actor: Actor, **fields: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {"title": "A task"}
    payload.update(fields)
    response = client.post(tasks_url("me"), headers=actor.headers, json=payload)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def get_task(client: TestClient, actor: Actor, task_id: int) -> dict[str, Any]:
    response = client.get(tasks_url("me", task_id), headers=actor.headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def list_tasks(client: TestClient, actor: Actor) -> list[dict[str, Any]]:
    response = client.get(tasks_url("me"), headers=actor.headers)
    assert response.status_code == 200, response.text
    body: list[dict[str, Any]] = response.json()
    return body


def parse_timestamp(value: str) -> datetime:
    """An ISO-8601 timestamp that must carry an offset; returned timezone-aware."""
    assert isinstance(value, str), value
    assert value.endswith("Z") or value[-6] in "+-", f"no UTC offset in {value!r}"
    parsed = datetime.fromisoformat(value[:-1] + "+00:00" if value.endswith("Z") else value)
    assert parsed.tzinfo is not None, value
    return parsed


def assert_utc_timestamp(value: str) -> datetime:
    parsed = parse_timestamp(value)
    assert parsed.utcoffset() == timedelta(0), f"{value!r} is not in UTC"
    return parsed


def assert_not_found(response: httpx.Response) -> None:
    assert response.status_code == 404, response.text
    assert response.json() == NOT_FOUND


def assert_validation_error(response: httpx.Response, loc: list[str | int] | None = None) -> None:
    """A 422 in FastAPI's shape; with `loc`, one of the errors must point at exactly that place."""
    assert response.status_code == 422, response.text
    body = response.json()
    assert set(body) == {"detail"}
    assert isinstance(body["detail"], list) and body["detail"], body
    if loc is not None:
        assert loc in [error["loc"] for error in body["detail"]], body
