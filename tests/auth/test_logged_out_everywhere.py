"""Every route under /api/{user_id}, read from the app's own router (a new route is covered without being listed
here), answers a logged-out token with 401, whatever its statement finds: an existing task, a missing one, with or
without an Idempotency-Key, a tag it has or one it lacks. Our tokens are checked inside the route's own statement
(`OwnerScope.rows`); this is the test that holds the rule there for every route."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from tests.auth.helpers import LOGOUT, assert_unauthorized, first_session, login
from tests.factories import UserFactory, bearer, better_auth_token
from todo_api.reminders.models import PushSubscriptionIn
from todo_api.tasks.models import TagRename, TaskBulk, TaskCompletion, TaskCreate, TaskUpdate

# A valid body for every request model a route under /api/{user_id} takes ({task} is an existing task's id): the
# session is checked after validation, so an invalid body would be a 422 and test nothing. A route with a body model
# not listed here fails the test until one is added.
SAMPLE_BODIES: dict[type[Any], dict[str, Any]] = {
    TaskCreate: {"title": "after logout"},
    TaskUpdate: {"title": "after logout"},
    TaskCompletion: {"completed": True},
    TaskBulk: {"action": "complete", "ids": ["{task}"]},
    TagRename: {"name": "renamed"},
    PushSubscriptionIn: {
        "endpoint": "https://push.example.com/send/1",
        "keys": {
            "p256dh": "BNcRdreALRFXTkOOUHK1EtK2wtaz5Ry4YfYCA_0QTpQtUbVlUls0VJXg7A8u-Ts1XbjhazAkj7I99e8QcYP7DkM",
            "auth": "tBHItJI5svbpez7KI4CCXg",
        },
    },
}
PREFIX = "/api/{user_id}"


def _api_routes(routes: list[Any]) -> Iterator[APIRoute]:
    """Every APIRoute, also inside included routers (FastAPI includes them as they are: no include prefix here)."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        elif hasattr(route, "original_router"):
            yield from _api_routes(route.original_router.routes)


def _owner_routes(app: FastAPI) -> Iterator[tuple[str, str, APIRoute]]:
    for route in _api_routes(app.routes):
        if route.path.startswith(PREFIX):
            for method in sorted(route.methods):
                yield method, route.path, route


def _body_model(route: APIRoute) -> type[Any] | None:
    fields = route.dependant.body_params
    if not fields:
        return None
    annotation = fields[0].field_info.annotation
    for model in SAMPLE_BODIES:
        if annotation is model or model in getattr(annotation, "__args__", ()):
            return model
    pytest.fail(f"{route.path}: no sample body for {annotation}; add one to SAMPLE_BODIES")


def _takes_idempotency_key(route: APIRoute) -> bool:
    return any(param.alias == "Idempotency-Key" for param in route.dependant.header_params)


def test_the_walk_finds_every_task_route(app: FastAPI) -> None:
    """The walk below is not vacuous: it sees every route of the task router."""
    found = {(method, path) for method, path, _ in _owner_routes(app)}
    assert {
        ("GET", "/api/{user_id}/tasks"),
        ("POST", "/api/{user_id}/tasks"),
        ("POST", "/api/{user_id}/tasks/bulk"),
        ("GET", "/api/{user_id}/tasks/{task_id}"),
        ("PUT", "/api/{user_id}/tasks/{task_id}"),
        ("PATCH", "/api/{user_id}/tasks/{task_id}"),
        ("DELETE", "/api/{user_id}/tasks/{task_id}"),
        ("PATCH", "/api/{user_id}/tasks/{task_id}/complete"),
        ("POST", "/api/{user_id}/tasks/{task_id}/restore"),
        ("GET", "/api/{user_id}/stats"),
        ("GET", "/api/{user_id}/tags"),
        ("PATCH", "/api/{user_id}/tags/{name}"),
        ("DELETE", "/api/{user_id}/tags/{name}"),
    } <= found


@pytest.mark.parametrize("token_kind", ["ours", "better-auth"])
def test_every_owner_route_refuses_a_logged_out_token(
    app: FastAPI, client: TestClient, users: UserFactory, token_kind: str
) -> None:
    if token_kind == "ours":
        user = users.create()
        user_id, leaving, staying = user.id, first_session(user).headers, login(client, user.email).headers
    else:
        user_id = f"ba-{uuid.uuid4().hex}"
        leaving = bearer(better_auth_token(user_id, email=f"{user_id}@example.com"))
        staying = bearer(better_auth_token(user_id, email=f"{user_id}@example.com", expires_in=901))  # another token
    created = client.post(f"/api/{user_id}/tasks", headers=staying, json={"title": "mine", "tags": ["mine"]})
    assert created.status_code == 201, created.text
    task_id = created.json()["id"]
    assert client.post(LOGOUT, headers=leaving).status_code == 204

    walked = 0
    for method, path, route in _owner_routes(app):
        model = _body_model(route)
        for task in (task_id, task_id + 10_000):
            for key in (None, f"key-{uuid.uuid4().hex}") if _takes_idempotency_key(route) else (None,):
                for owner in (user_id, "me"):
                    url = (
                        path.replace("{user_id}", owner)
                        .replace("{task_id}", str(task))
                        .replace("{subscription_id}", str(task))
                        .replace("{notification_id}", str(task))
                        .replace("{name}", "mine" if task == task_id else "none")
                    )
                    headers = dict(leaving) if key is None else {**leaving, "Idempotency-Key": key}
                    body = None
                    if model is not None:
                        body = {
                            name: [task if item == "{task}" else item for item in value]
                            if isinstance(value, list)
                            else value
                            for name, value in SAMPLE_BODIES[model].items()
                        }
                    response = client.request(method, url, headers=headers, json=body)
                    assert response.status_code == 401, (method, url, response.status_code, response.text)
                    assert_unauthorized(response)
                    walked += 1
    assert walked >= 40

    # Nothing was changed by any of those requests.
    task = client.get(f"/api/{user_id}/tasks/{task_id}", headers=staying)
    assert task.status_code == 200, task.text
    assert task.json()["version"] == 1
    listed = client.get(f"/api/{user_id}/tasks", headers=staying)
    assert [item["id"] for item in listed.json()] == [task_id]
