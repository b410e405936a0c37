"""Isolation: another user's tasks answer exactly like tasks that do not exist, and are never changed.

A is the attacker, B the victim. Each pairing of local (registered) and Better Auth (HS256 frontend token)
users runs every test, on every task route and method.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.factories import UserFactory
from tests.tasks.helpers import (
    MISSING_TASK_ID,
    NOT_FOUND,
    Actor,
    better_auth_actor,
    create_task,
    get_task,
    list_tasks,
    local_actor,
    tasks_url,
)


@dataclass(frozen=True)
class Route:
    name: str
    method: str
    item: bool  # addresses one task (…/tasks/{id}) rather than the collection
    complete: bool = False
    payload: Any = None

    def url(self, owner: str, task_id: int | None = None) -> str:
        return tasks_url(owner, task_id if self.item else None, complete=self.complete)

    def call(self, client: TestClient, actor: Actor, owner: str, task_id: int | None = None) -> httpx.Response:
        return client.request(self.method, self.url(owner, task_id), headers=actor.headers, json=self.payload)


ROUTES = [
    Route("list", "GET", item=False),
    Route("create", "POST", item=False, payload={"title": "Planted by A", "completed": True}),
    Route("get", "GET", item=True),
    Route("put", "PUT", item=True, payload={"title": "Changed by A", "description": None, "completed": True}),
    Route("patch", "PATCH", item=True, payload={"title": "Changed by A", "priority": "low", "category": None}),
    Route("complete-toggle", "PATCH", item=True, complete=True),
    Route("complete-set", "PATCH", item=True, complete=True, payload={"completed": True}),
    Route("delete", "DELETE", item=True),
]
ITEM_ROUTES = [route for route in ROUTES if route.item]
CREATE_ROUTE = next(route for route in ROUTES if route.name == "create")

all_routes = pytest.mark.parametrize("route", ROUTES, ids=[route.name for route in ROUTES])
item_routes = pytest.mark.parametrize("route", ITEM_ROUTES, ids=[route.name for route in ITEM_ROUTES])

ActorMaker = Callable[[TestClient, UserFactory], Actor]
KINDS: dict[str, ActorMaker] = {
    "local": lambda _client, users: local_actor(users),
    "better_auth": lambda client, _users: better_auth_actor(client),
}
PAIRS = [
    ("local", "local"),
    ("better_auth", "local"),
    ("local", "better_auth"),
    ("better_auth", "better_auth"),
]


@dataclass
class Scene:
    """A, B, one task of each, and B's state before A does anything."""

    attacker: Actor
    victim: Actor
    attacker_task: dict[str, Any]
    victim_task: dict[str, Any]
    victim_list: list[dict[str, Any]]
    attacker_list: list[dict[str, Any]]


@pytest.fixture(params=PAIRS, ids=[f"{a}-vs-{b}" for a, b in PAIRS])
def scene(request: pytest.FixtureRequest, client: TestClient, users: UserFactory) -> Scene:
    attacker_kind, victim_kind = request.param
    attacker = KINDS[attacker_kind](client, users)
    victim = KINDS[victim_kind](client, users)
    assert attacker.id != victim.id
    create_task(client, victim, title="B's older task")
    victim_task = create_task(
        client,
        victim,
        title="B's secret",
        description="only B may see this",
        priority="high",
        category="private",
        due_date="2030-01-02T03:04:05Z",
    )
    attacker_task = create_task(client, attacker, title="A's own task")
    return Scene(
        attacker=attacker,
        victim=victim,
        attacker_task=attacker_task,
        victim_task=victim_task,
        victim_list=list_tasks(client, victim),
        attacker_list=list_tasks(client, attacker),
    )


def missing_task_response(client: TestClient, scene: Scene, route: Route) -> httpx.Response:
    """What A gets for a task that does not exist: the same route on A's own path (a GET for collections)."""
    reference = route if route.item else Route("get", "GET", item=True)
    response = reference.call(client, scene.attacker, "me", MISSING_TASK_ID)
    assert response.status_code == 404, response.text
    assert response.json() == NOT_FOUND
    return response


def assert_same_not_found(response: httpx.Response, reference: httpx.Response) -> None:
    assert response.status_code == 404, response.text
    assert response.content == reference.content
    assert response.headers["content-type"] == reference.headers["content-type"]


def assert_nothing_changed(client: TestClient, scene: Scene) -> None:
    """B's task and list are exactly as before (seen by B), and A gained or lost nothing."""
    assert get_task(client, scene.victim, scene.victim_task["id"]) == scene.victim_task
    assert list_tasks(client, scene.victim) == scene.victim_list
    assert list_tasks(client, scene.attacker) == scene.attacker_list


@all_routes
def test_other_users_path_is_a_plain_404(client: TestClient, scene: Scene, route: Route) -> None:
    reference = missing_task_response(client, scene, route)

    response = route.call(client, scene.attacker, scene.victim.id, scene.victim_task["id"])

    assert_same_not_found(response, reference)
    assert_nothing_changed(client, scene)


@all_routes
def test_other_users_path_with_own_task_id_is_a_plain_404(client: TestClient, scene: Scene, route: Route) -> None:
    reference = missing_task_response(client, scene, route)

    response = route.call(client, scene.attacker, scene.victim.id, scene.attacker_task["id"])

    assert_same_not_found(response, reference)
    assert get_task(client, scene.attacker, scene.attacker_task["id"]) == scene.attacker_task
    assert_nothing_changed(client, scene)


@all_routes
def test_unknown_users_path_is_the_same_404(client: TestClient, scene: Scene, route: Route) -> None:
    reference = missing_task_response(client, scene, route)

    for owner in ("00000000-0000-4000-8000-000000000000", "ba_nobody", scene.victim.id.upper(), "ME"):
        response = route.call(client, scene.attacker, owner, scene.victim_task["id"])
        assert_same_not_found(response, reference)
    assert_nothing_changed(client, scene)


@item_routes
@pytest.mark.parametrize("owner", ["me", "own-id"])
def test_other_users_task_id_on_own_path_is_a_plain_404(
    client: TestClient, scene: Scene, route: Route, owner: str
) -> None:
    reference = missing_task_response(client, scene, route)
    path_owner = scene.attacker.id if owner == "own-id" else "me"

    response = route.call(client, scene.attacker, path_owner, scene.victim_task["id"])

    assert_same_not_found(response, reference)
    assert_nothing_changed(client, scene)


@pytest.mark.parametrize(
    "payload",
    [
        {"title": "Planted by A"},
        {"title": "Planted by A", "user_id": "<victim>"},
        {"title": "Planted by A", "id": "<victim-task>", "user_id": "<victim>"},
    ],
    ids=["plain", "user-id-in-body", "task-id-in-body"],
)
def test_post_to_other_users_path_creates_nothing(client: TestClient, scene: Scene, payload: dict[str, Any]) -> None:
    reference = missing_task_response(client, scene, CREATE_ROUTE)
    substitutes = {"<victim>": scene.victim.id, "<victim-task>": scene.victim_task["id"]}
    body = {key: substitutes.get(value, value) for key, value in payload.items()}

    response = client.post(tasks_url(scene.victim.id), headers=scene.attacker.headers, json=body)

    assert_same_not_found(response, reference)
    assert_nothing_changed(client, scene)


def test_post_with_victims_user_id_in_body_lands_with_the_caller(client: TestClient, scene: Scene) -> None:
    created = create_task(client, scene.attacker, title="Mine after all", user_id=scene.victim.id)

    assert created["user_id"] == scene.attacker.id
    assert list_tasks(client, scene.attacker) == [created, *scene.attacker_list]
    assert get_task(client, scene.victim, scene.victim_task["id"]) == scene.victim_task
    assert list_tasks(client, scene.victim) == scene.victim_list


@pytest.mark.parametrize(
    ("method", "complete", "payload"),
    [
        ("PUT", False, {"title": ""}),
        ("PATCH", False, {"title": None}),
        ("PATCH", False, {"priority": "urgent"}),
        ("PUT", False, {"title": "Fine"}),
        ("PATCH", True, {"completed": "maybe"}),
        ("PATCH", True, {"completed": False}),
    ],
    ids=[
        "put-empty-title",
        "patch-null-title",
        "patch-bad-priority",
        "put-valid",
        "complete-bad",
        "complete-set",
    ],
)
def test_responses_never_tell_another_users_task_from_a_missing_one(
    client: TestClient, scene: Scene, method: str, complete: bool, payload: dict[str, Any]
) -> None:
    def attempt(task_id: int) -> httpx.Response:
        url = tasks_url("me", task_id, complete=complete)
        return client.request(method, url, headers=scene.attacker.headers, json=payload)

    theirs, missing = attempt(scene.victim_task["id"]), attempt(MISSING_TASK_ID)

    assert theirs.status_code == missing.status_code
    assert theirs.status_code in (404, 422)
    # A 422 may echo the submitted value and so mentions nothing but A's own input.
    assert theirs.content == missing.content
    assert_nothing_changed(client, scene)


@item_routes
def test_victim_still_has_full_access_afterwards(client: TestClient, scene: Scene, route: Route) -> None:
    for owner in ("me", scene.attacker.id, scene.victim.id):
        route.call(client, scene.attacker, owner, scene.victim_task["id"])

    response = route.call(client, scene.victim, "me", scene.victim_task["id"])

    assert response.status_code == (204 if route.method == "DELETE" else 200), response.text
    if route.method == "DELETE":
        assert list_tasks(client, scene.victim) == [t for t in scene.victim_list if t != scene.victim_task]
    else:
        assert response.json()["id"] == scene.victim_task["id"]
        assert response.json()["user_id"] == scene.victim.id
