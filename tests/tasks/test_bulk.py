"""POST /api/{user_id}/tasks/bulk: complete, reopen, trash and restore many tasks in one statement."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.factories import UserFactory
from tests.tasks.helpers import (
    ACTOR_PAIRS,
    MISSING_TASK_ID,
    Actor,
    assert_not_found,
    assert_validation_error,
    create_task,
    get_task,
    list_tasks,
    new_actor,
    tasks_url,
)

BULK = tasks_url("me", "bulk")


def bulk(client: TestClient, actor: Actor, action: str, ids: list[int], owner: str = "me") -> dict[str, Any]:
    response = client.post(tasks_url(owner, "bulk"), headers=actor.headers, json={"action": action, "ids": ids})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def trashed(client: TestClient, actor: Actor) -> list[dict[str, Any]]:
    response = client.get(tasks_url("me"), headers=actor.headers, params={"trashed": "true"})
    body: list[dict[str, Any]] = response.json()
    return body


def test_complete_counts_only_the_tasks_it_changed(client: TestClient, actor: Actor) -> None:
    pending = [create_task(client, actor)["id"] for _ in range(3)]
    done = create_task(client, actor, completed=True)
    untouched = create_task(client, actor)["id"]
    assert bulk(client, actor, "complete", [*pending, done["id"]]) == {"updated": 3}
    for task_id in pending:
        task = get_task(client, actor, task_id)
        assert task["completed"] is True and task["status"] == "completed"
        assert task["completed_at"] is not None
        assert task["version"] == 2
        assert task["updated_at"] == task["completed_at"]
    assert get_task(client, actor, done["id"]) == done  # already complete: unchanged, version 1
    assert get_task(client, actor, untouched)["completed"] is False


def test_reopen(client: TestClient, actor: Actor) -> None:
    done = [create_task(client, actor, completed=True)["id"] for _ in range(2)]
    pending = create_task(client, actor)
    assert bulk(client, actor, "reopen", [*done, pending["id"]]) == {"updated": 2}
    for task_id in done:
        task = get_task(client, actor, task_id)
        assert (task["completed"], task["completed_at"], task["version"]) == (False, None, 2)
    assert get_task(client, actor, pending["id"]) == pending


def test_delete_trashes_and_restore_restores(client: TestClient, actor: Actor) -> None:
    tasks = [create_task(client, actor)["id"] for _ in range(3)]
    assert bulk(client, actor, "delete", tasks[:2]) == {"updated": 2}
    assert [t["id"] for t in list_tasks(client, actor)] == [tasks[2]]
    in_trash = trashed(client, actor)
    assert sorted(t["id"] for t in in_trash) == tasks[:2]
    assert all(t["trashed_at"] == t["updated_at"] and t["version"] == 2 for t in in_trash)
    # Trashing what is already in the trash changes nothing.
    assert bulk(client, actor, "delete", tasks) == {"updated": 1}
    assert bulk(client, actor, "complete", tasks) == {"updated": 0}

    assert bulk(client, actor, "restore", [tasks[0], tasks[1]]) == {"updated": 2}
    assert sorted(t["id"] for t in list_tasks(client, actor)) == tasks[:2]
    assert [t["version"] for t in list_tasks(client, actor)] == [3, 3]
    assert bulk(client, actor, "restore", tasks) == {"updated": 1}
    assert trashed(client, actor) == []


@pytest.mark.parametrize("pair", ACTOR_PAIRS)
def test_other_users_and_missing_ids_are_ignored(client: TestClient, users: UserFactory, pair: tuple[str, str]) -> None:
    me, other = (new_actor(kind, client, users) for kind in pair)
    mine = create_task(client, me)["id"]
    theirs = create_task(client, other)
    ids = [mine, theirs["id"], MISSING_TASK_ID, 0, -1, 2**64, mine]
    for action, expected in (("complete", 1), ("reopen", 1), ("delete", 1), ("restore", 1)):
        assert bulk(client, me, action, ids) == {"updated": expected}
    assert get_task(client, other, theirs["id"]) == theirs


def test_nothing_to_do_is_zero(client: TestClient, actor: Actor) -> None:
    assert bulk(client, actor, "complete", [MISSING_TASK_ID]) == {"updated": 0}
    assert bulk(client, actor, "restore", [-1, 0]) == {"updated": 0}


def test_five_hundred_ids_at_once(client: TestClient, actor: Actor) -> None:
    tasks = [create_task(client, actor, title=f"Task {n}")["id"] for n in range(5)]
    ids = tasks + list(range(MISSING_TASK_ID - 494, MISSING_TASK_ID + 1))
    assert len(ids) == 500
    assert bulk(client, actor, "complete", ids) == {"updated": 5}


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"action": "complete", "ids": []}, ["body", "ids"]),
        ({"action": "complete", "ids": list(range(1, 502))}, ["body", "ids"]),
        ({"action": "complete"}, ["body", "ids"]),
        ({"ids": [1]}, ["body", "action"]),
        ({"action": "archive", "ids": [1]}, ["body", "action"]),
        ({"action": "complete", "ids": "1,2"}, ["body", "ids"]),
        ({"action": "complete", "ids": ["one"]}, ["body", "ids", 0]),
        ({"action": "complete", "ids": [1.5]}, ["body", "ids", 0]),
        ({"action": None, "ids": [1]}, ["body", "action"]),
    ],
)
def test_invalid_requests_are_422(client: TestClient, actor: Actor, body: dict[str, Any], loc: list[Any]) -> None:
    task = create_task(client, actor)
    response = client.post(BULK, headers=actor.headers, json=body)
    assert_validation_error(response, loc)
    assert get_task(client, actor, task["id"]) == task


def test_no_body_is_422(client: TestClient, actor: Actor) -> None:
    assert client.post(BULK, headers=actor.headers).status_code == 422
    assert (
        client.post(
            BULK,
            headers=actor.headers,
            content=b"\xff",
        ).status_code
        == 422
    )


def test_unknown_fields_are_ignored(client: TestClient, actor: Actor) -> None:
    task = create_task(client, actor)
    response = client.post(BULK, headers=actor.headers, json={"action": "delete", "ids": [task["id"]], "x": 1})
    assert response.json() == {"updated": 1}


@pytest.mark.parametrize("pair", ACTOR_PAIRS)
def test_another_users_bulk_path_is_the_same_404_and_changes_nothing(
    client: TestClient, users: UserFactory, pair: tuple[str, str]
) -> None:
    me, other = (new_actor(kind, client, users) for kind in pair)
    theirs = create_task(client, other)
    missing = client.get(tasks_url("me", MISSING_TASK_ID), headers=me.headers)
    for body in ({"action": "delete", "ids": [theirs["id"]]}, {"action": "nonsense", "ids": []}):
        response = client.post(tasks_url(other.id, "bulk"), headers=me.headers, json=body)
        assert_not_found(response)
        assert response.content == missing.content
    assert get_task(client, other, theirs["id"]) == theirs


def test_bulk_needs_a_token(client: TestClient) -> None:
    response = client.post(BULK, json={"action": "complete", "ids": [1]})
    assert response.status_code == 401
