"""The task routes from one user's point of view: create, list, read, update, complete, delete, bad input."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update as sql_update
from sqlmodel import Session, col

from tests.factories import UserFactory, bearer, better_auth_token
from tests.tasks.helpers import (
    MISSING_TASK_ID,
    NOT_FOUND,
    TASK_KEYS,
    Actor,
    assert_not_found,
    assert_utc_timestamp,
    assert_validation_error,
    create_task,
    get_task,
    list_tasks,
    local_actor,
    parse_timestamp,
    tasks_url,
)
from todo_api.tasks.models import Task, TaskPublic


@pytest.fixture
def alice(users: UserFactory) -> Actor:
    return local_actor(users)


def expected_task(body: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """A default new task, with the values only the server knows (id, timestamps) taken from `body`."""
    task: dict[str, Any] = {
        "id": body["id"],
        "user_id": body["user_id"],
        "title": "A task",
        "description": None,
        "completed": False,
        "status": "pending",
        "priority": "medium",
        "category": None,
        "due_date": None,
        "completed_at": None,
        "created_at": body["created_at"],
        "updated_at": body["updated_at"],
        "version": 1,
        "trashed_at": None,
        "tags": [],
        "checklist": [],
        "reminders": [],
        "recurrence": None,
        "recurrence_basis": "due",
        "time_zone": "UTC",
        "series_id": None,
        "next_task_id": None,
    }
    task.update(fields)
    return task


def post(client: TestClient, actor: Actor, payload: Any) -> Any:
    return client.post(tasks_url("me"), headers=actor.headers, json=payload)


# --- create ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("owner", ["me", "own-id"])
def test_create_returns_201_with_defaults(client: TestClient, alice: Actor, owner: str) -> None:
    path_owner = alice.id if owner == "own-id" else "me"
    response = client.post(tasks_url(path_owner), headers=alice.headers, json={"title": "Buy milk"})

    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == TASK_KEYS
    assert body == expected_task(body, user_id=alice.id, title="Buy milk")
    assert isinstance(body["id"], int) and body["id"] > 0
    created = assert_utc_timestamp(body["created_at"])
    assert assert_utc_timestamp(body["updated_at"]) >= created
    assert get_task(client, alice, body["id"]) == body


def test_create_with_every_field(client: TestClient, alice: Actor) -> None:
    body = create_task(
        client,
        alice,
        title="Write report",
        description="Quarterly numbers",
        priority="high",
        category="work",
        due_date="2030-01-02T03:04:05Z",
    )

    assert body == expected_task(
        body,
        user_id=alice.id,
        title="Write report",
        description="Quarterly numbers",
        priority="high",
        category="work",
        due_date=body["due_date"],
    )
    assert assert_utc_timestamp(body["due_date"]) == datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.mark.parametrize("priority", ["low", "medium", "high"])
def test_create_accepts_each_priority(client: TestClient, alice: Actor, priority: str) -> None:
    body = create_task(client, alice, priority=priority)

    assert body["priority"] == priority
    assert get_task(client, alice, body["id"])["priority"] == priority


def test_create_trims_title(client: TestClient, alice: Actor) -> None:
    body = create_task(client, alice, title="  \t Buy milk \n ")

    assert body["title"] == "Buy milk"
    assert get_task(client, alice, body["id"])["title"] == "Buy milk"


@pytest.mark.parametrize(
    "title",
    ["x" * 200, "  " + "x" * 200 + "  ", "é" * 200, "a"],
    ids=["200-chars", "200-after-trimming", "200-non-ascii", "1-char"],
)
def test_create_accepts_titles_of_1_to_200_characters(client: TestClient, alice: Actor, title: str) -> None:
    body = create_task(client, alice, title=title)

    assert body["title"] == title.strip()


@pytest.mark.parametrize(
    "title",
    ["", " ", " \t\n ", "x" * 201, " " + "x" * 201 + " ", None, 123, ["a"]],
    ids=["empty", "space", "whitespace", "201-chars", "201-after-trimming", "null", "number", "list"],
)
def test_create_rejects_invalid_title(client: TestClient, alice: Actor, title: Any) -> None:
    response = post(client, alice, {"title": title})

    assert_validation_error(response, ["body", "title"])
    assert list_tasks(client, alice) == []


def test_create_requires_title(client: TestClient, alice: Actor) -> None:
    response = post(client, alice, {"description": "no title"})

    assert_validation_error(response, ["body", "title"])
    assert list_tasks(client, alice) == []


def test_create_description_limit(client: TestClient, alice: Actor) -> None:
    body = create_task(client, alice, description="d" * 1000)
    assert body["description"] == "d" * 1000

    response = post(client, alice, {"title": "t", "description": "d" * 1001})
    assert_validation_error(response, ["body", "description"])
    assert [task["id"] for task in list_tasks(client, alice)] == [body["id"]]


@pytest.mark.parametrize("priority", ["urgent", "HIGH", "", None, 1])
def test_create_rejects_invalid_priority(client: TestClient, alice: Actor, priority: Any) -> None:
    response = post(client, alice, {"title": "t", "priority": priority})

    assert_validation_error(response, ["body", "priority"])
    assert list_tasks(client, alice) == []


def test_create_category_limit(client: TestClient, alice: Actor) -> None:
    body = create_task(client, alice, category="c" * 50)
    assert body["category"] == "c" * 50

    response = post(client, alice, {"title": "t", "category": "c" * 51})
    assert_validation_error(response, ["body", "category"])
    assert [task["id"] for task in list_tasks(client, alice)] == [body["id"]]


def test_create_trims_category_before_checking_its_length(client: TestClient, alice: Actor) -> None:
    assert create_task(client, alice, category="  home \t")["category"] == "home"
    assert create_task(client, alice, category="  " + "c" * 50 + "  ")["category"] == "c" * 50


@pytest.mark.parametrize("category", ["", "   ", "\t\n", None])
def test_create_blank_category_is_null(client: TestClient, alice: Actor, category: str | None) -> None:
    body = create_task(client, alice, category=category)

    assert body["category"] is None
    assert get_task(client, alice, body["id"])["category"] is None


def test_create_naive_due_date_is_taken_as_utc(client: TestClient, alice: Actor) -> None:
    body = create_task(client, alice, due_date="2030-01-02T03:04:05")

    assert body["due_date"] in ("2030-01-02T03:04:05Z", "2030-01-02T03:04:05+00:00")
    assert assert_utc_timestamp(body["due_date"]) == datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert get_task(client, alice, body["id"])["due_date"] == body["due_date"]


def test_create_due_date_with_offset_is_converted_to_utc(client: TestClient, alice: Actor) -> None:
    body = create_task(client, alice, due_date="2030-01-02T03:04:05+02:00")

    assert body["due_date"] in ("2030-01-02T01:04:05Z", "2030-01-02T01:04:05+00:00")
    assert assert_utc_timestamp(body["due_date"]) == datetime(2030, 1, 2, 1, 4, 5, tzinfo=UTC)
    assert get_task(client, alice, body["id"])["due_date"] == body["due_date"]


@pytest.mark.parametrize("due_date", ["tomorrow", "2030-13-01T00:00:00", "", True])
def test_create_rejects_invalid_due_date(client: TestClient, alice: Actor, due_date: Any) -> None:
    response = post(client, alice, {"title": "t", "due_date": due_date})

    assert_validation_error(response, ["body", "due_date"])
    assert list_tasks(client, alice) == []


def test_create_completed_sets_completed_at(client: TestClient, alice: Actor) -> None:
    body = create_task(client, alice, completed=True, completed_at="2000-01-01T00:00:00Z")

    assert body == expected_task(body, completed=True, status="completed", completed_at=body["completed_at"])
    completed_at = assert_utc_timestamp(body["completed_at"])
    assert completed_at >= parse_timestamp(body["created_at"])
    assert completed_at.year != 2000
    assert get_task(client, alice, body["id"]) == body


def test_create_ignores_unknown_and_server_owned_fields(client: TestClient, alice: Actor, users: UserFactory) -> None:
    bob = local_actor(users)
    forced_id = 987_654_321
    body = create_task(
        client,
        alice,
        title="Mine",
        id=forced_id,
        user_id=bob.id,
        status="completed",
        created_at="2000-01-01T00:00:00Z",
        updated_at="2000-01-01T00:00:00Z",
        completed_at="2000-01-01T00:00:00Z",
        owner=bob.id,
        colour="red",
    )

    assert body == expected_task(body, user_id=alice.id, title="Mine")
    assert body["id"] != forced_id
    assert parse_timestamp(body["created_at"]).year != 2000
    assert parse_timestamp(body["updated_at"]).year != 2000
    assert_not_found(client.get(tasks_url("me", forced_id), headers=alice.headers))
    assert [task["id"] for task in list_tasks(client, alice)] == [body["id"]]
    assert list_tasks(client, bob) == []


# --- list -----------------------------------------------------------------------------------------------


def test_list_is_empty_for_a_new_user(client: TestClient, alice: Actor) -> None:
    response = client.get(tasks_url("me"), headers=alice.headers)

    assert response.status_code == 200
    assert response.json() == []


def test_list_is_newest_first(client: TestClient, alice: Actor) -> None:
    created = [create_task(client, alice, title=f"Task {n}") for n in range(3)]

    listed = list_tasks(client, alice)

    assert listed == list(reversed(created))
    response = client.get(tasks_url(alice.id), headers=alice.headers)
    assert response.status_code == 200
    assert response.json() == listed


def test_list_orders_by_created_at_then_id(client: TestClient, alice: Actor, db_session: Session) -> None:
    first, second, third = (create_task(client, alice, title=f"Task {n}") for n in range(3))
    # The API cannot create two tasks in the same instant or backdate one, so arrange that in the database.
    same_instant = datetime(2030, 1, 1, tzinfo=UTC)
    later = datetime(2030, 1, 2, tzinfo=UTC)
    db_session.execute(sql_update(Task).where(col(Task.user_id) == alice.id).values(created_at=same_instant))
    db_session.execute(sql_update(Task).where(col(Task.id) == first["id"]).values(created_at=later))
    db_session.commit()
    db_session.expire_all()

    listed = list_tasks(client, alice)

    assert [task["id"] for task in listed] == [first["id"], third["id"], second["id"]]
    assert [parse_timestamp(task["created_at"]) for task in listed] == [later, same_instant, same_instant]


def test_list_shows_only_own_tasks(client: TestClient, alice: Actor, users: UserFactory) -> None:
    bob = local_actor(users)
    mine = [create_task(client, alice, title=f"Alice {n}") for n in range(2)]
    theirs = create_task(client, bob, title="Bob")

    assert list_tasks(client, alice) == list(reversed(mine))
    assert list_tasks(client, bob) == [theirs]


# --- get ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("owner", ["me", "own-id"])
def test_get_one(client: TestClient, alice: Actor, owner: str) -> None:
    created = create_task(client, alice, title="Read", description="a book")

    response = client.get(tasks_url(alice.id if owner == "own-id" else "me", created["id"]), headers=alice.headers)

    assert response.status_code == 200
    assert response.json() == created


def test_get_missing_task(client: TestClient, alice: Actor) -> None:
    assert_not_found(client.get(tasks_url("me", MISSING_TASK_ID), headers=alice.headers))


def test_timestamps_survive_a_database_round_trip(client: TestClient, alice: Actor, db_session: Session) -> None:
    created = create_task(client, alice, completed=True, due_date="2030-06-15T12:30:45.123456+05:30")
    db_session.expire_all()  # the next read comes from the database, not from objects still in memory

    reloaded = get_task(client, alice, created["id"])

    assert reloaded == created
    for key in ("due_date", "completed_at", "created_at", "updated_at"):
        assert_utc_timestamp(reloaded[key])
    assert parse_timestamp(reloaded["due_date"]) == datetime(2030, 6, 15, 7, 0, 45, 123456, tzinfo=UTC)


# --- update (PUT and PATCH accept the same partial bodies) ----------------------------------------------

UPDATE_METHODS = ["PUT", "PATCH"]


def update(client: TestClient, actor: Actor, method: str, task_id: int, payload: Any) -> Any:
    return client.request(method, tasks_url("me", task_id), headers=actor.headers, json=payload)


FULL_TASK = {
    "title": "Original",
    "description": "Original description",
    "priority": "high",
    "category": "home",
    "due_date": "2030-01-02T03:04:05Z",
}


@pytest.mark.parametrize("method", UPDATE_METHODS)
@pytest.mark.parametrize(
    ("payload", "changes"),
    [
        ({"title": "  New title  "}, {"title": "New title"}),
        ({"description": "New description"}, {"description": "New description"}),
        ({"description": None}, {"description": None}),
        ({"priority": "low"}, {"priority": "low"}),
        ({"category": "  garden "}, {"category": "garden"}),
        ({"category": None}, {"category": None}),
        ({"category": "   "}, {"category": None}),
        ({"due_date": None}, {"due_date": None}),
        ({"due_date": "2031-05-06T07:08:09"}, {"due_date": "2031-05-06T07:08:09Z"}),
        ({}, {}),
    ],
    ids=[
        "title",
        "description",
        "description-null",
        "priority",
        "category",
        "category-null",
        "category-blank",
        "due-date-null",
        "due-date",
        "empty",
    ],
)
def test_partial_update_changes_only_what_is_sent(
    client: TestClient, alice: Actor, method: str, payload: dict[str, Any], changes: dict[str, Any]
) -> None:
    before = create_task(client, alice, **FULL_TASK)

    response = update(client, alice, method, before["id"], payload)

    assert response.status_code == 200, response.text
    after = response.json()
    if "due_date" in changes and changes["due_date"] is not None:
        assert parse_timestamp(after["due_date"]) == parse_timestamp(changes["due_date"])
        assert_utc_timestamp(after["due_date"])
        changes = {**changes, "due_date": after["due_date"]}
    assert after == {**before, **changes, "updated_at": after["updated_at"], "version": after["version"]}
    assert parse_timestamp(after["updated_at"]) > parse_timestamp(before["updated_at"])
    assert after["version"] == before["version"] + 1
    assert get_task(client, alice, before["id"]) == after


@pytest.mark.parametrize("method", UPDATE_METHODS)
def test_put_back_a_whole_task_object(client: TestClient, alice: Actor, users: UserFactory, method: str) -> None:
    bob = local_actor(users)
    original = create_task(client, alice, **FULL_TASK)
    edited = {
        **get_task(client, alice, original["id"]),
        "title": "Edited",
        "description": None,
        "priority": "low",
        "category": "errands",
        "completed": True,
    }
    tampered = {
        **edited,
        "id": original["id"] + 1000,
        "user_id": bob.id,
        "status": "pending",
        "completed_at": "2000-01-01T00:00:00Z",
        "created_at": "2000-01-01T00:00:00Z",
        "updated_at": "2000-01-01T00:00:00Z",
    }

    response = update(client, alice, method, original["id"], tampered)

    assert response.status_code == 200, response.text
    after = response.json()
    assert after == {
        **original,
        "title": "Edited",
        "description": None,
        "priority": "low",
        "category": "errands",
        "completed": True,
        "status": "completed",
        "completed_at": after["completed_at"],
        "updated_at": after["updated_at"],
        "version": after["version"],
    }
    assert assert_utc_timestamp(after["completed_at"]).year != 2000
    assert parse_timestamp(after["updated_at"]) > parse_timestamp(original["updated_at"])
    assert get_task(client, alice, original["id"]) == after
    assert list_tasks(client, bob) == []


@pytest.mark.parametrize("method", UPDATE_METHODS)
def test_update_completed_sets_and_clears_completed_at(client: TestClient, alice: Actor, method: str) -> None:
    task = create_task(client, alice)

    done = update(client, alice, method, task["id"], {"completed": True})
    assert done.status_code == 200, done.text
    assert done.json() == {
        **task,
        "completed": True,
        "status": "completed",
        "completed_at": done.json()["completed_at"],
        "updated_at": done.json()["updated_at"],
        "version": done.json()["version"],
    }
    assert_utc_timestamp(done.json()["completed_at"])

    reopened = update(client, alice, method, task["id"], {"completed": False})
    assert reopened.status_code == 200, reopened.text
    assert reopened.json() == {
        **task,
        "updated_at": reopened.json()["updated_at"],
        "version": reopened.json()["version"],
    }


@pytest.mark.parametrize("method", UPDATE_METHODS)
@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"title": None}, "title"),
        ({"priority": None}, "priority"),
        ({"completed": None}, "completed"),
        ({"title": ""}, "title"),
        ({"title": "   "}, "title"),
        ({"title": "x" * 201}, "title"),
        ({"title": "a\x00b"}, "title"),
        ({"description": "d" * 1001}, "description"),
        ({"priority": "urgent"}, "priority"),
        ({"category": "c" * 51}, "category"),
        ({"due_date": "soon"}, "due_date"),
        ({"completed": "perhaps"}, "completed"),
    ],
    ids=[
        "null-title",
        "null-priority",
        "null-completed",
        "empty-title",
        "blank-title",
        "long-title",
        "nul-title",
        "long-description",
        "bad-priority",
        "long-category",
        "bad-due-date",
        "bad-completed",
    ],
)
def test_update_rejects_invalid_values(
    client: TestClient, alice: Actor, method: str, payload: dict[str, Any], field: str
) -> None:
    before = create_task(client, alice, **FULL_TASK)

    response = update(client, alice, method, before["id"], payload)

    assert_validation_error(response, ["body", field])
    assert get_task(client, alice, before["id"]) == before


@pytest.mark.parametrize("method", UPDATE_METHODS)
def test_update_accepts_limits(client: TestClient, alice: Actor, method: str) -> None:
    task = create_task(client, alice)

    response = update(
        client,
        alice,
        method,
        task["id"],
        {"title": "t" * 200, "description": "d" * 1000, "category": "c" * 50},
    )

    assert response.status_code == 200, response.text
    assert response.json() == {
        **task,
        "title": "t" * 200,
        "description": "d" * 1000,
        "category": "c" * 50,
        "updated_at": response.json()["updated_at"],
        "version": response.json()["version"],
    }


@pytest.mark.parametrize("method", UPDATE_METHODS)
def test_update_missing_task(client: TestClient, alice: Actor, method: str) -> None:
    assert_not_found(update(client, alice, method, MISSING_TASK_ID, {"title": "x"}))


# --- complete -------------------------------------------------------------------------------------------


def complete(
    client: TestClient, actor: Actor, task_id: int, headers: dict[str, str] | None = None, **kwargs: Any
) -> dict[str, Any]:
    url = tasks_url("me", task_id, complete=True)
    response = client.patch(url, headers=actor.headers if headers is None else headers, **kwargs)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def assert_completed(task: dict[str, Any]) -> None:
    assert task["completed"] is True
    assert task["status"] == "completed"
    assert_utc_timestamp(task["completed_at"])


def assert_pending(task: dict[str, Any]) -> None:
    assert task["completed"] is False
    assert task["status"] == "pending"
    assert task["completed_at"] is None


@pytest.mark.parametrize(
    ("body", "content_type"),
    [({}, None), ({"json": {}}, None), ({"content": b""}, "application/json")],
    ids=["no-body", "empty-object", "empty-json-request"],
)
def test_complete_without_a_value_toggles(
    client: TestClient, alice: Actor, body: dict[str, Any], content_type: str | None
) -> None:
    task = create_task(client, alice)
    headers = alice.headers if content_type is None else {**alice.headers, "Content-Type": content_type}

    done = complete(client, alice, task["id"], headers=headers, **body)
    assert done == {
        **task,
        "completed": True,
        "status": "completed",
        **pick(done, "completed_at", "updated_at"),
        "version": task["version"] + 1,
    }
    assert_completed(done)
    assert parse_timestamp(done["updated_at"]) > parse_timestamp(task["updated_at"])

    again = complete(client, alice, task["id"], headers=headers, **body)
    assert again == {**task, "updated_at": again["updated_at"], "version": again["version"]}
    assert_pending(again)
    assert parse_timestamp(again["updated_at"]) > parse_timestamp(done["updated_at"])
    assert get_task(client, alice, task["id"]) == again


def pick(task: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {key: task[key] for key in keys}


def test_complete_true_sets_and_is_idempotent(client: TestClient, alice: Actor) -> None:
    task = create_task(client, alice)

    done = complete(client, alice, task["id"], json={"completed": True})
    assert done == {
        **task,
        "completed": True,
        "status": "completed",
        **pick(done, "completed_at", "updated_at"),
        "version": task["version"] + 1,
    }
    assert_completed(done)

    still = complete(client, alice, task["id"], json={"completed": True})
    assert_completed(still)
    assert still["completed_at"] == done["completed_at"]
    assert still == {**done, "updated_at": still["updated_at"], "version": still["version"]}


def test_complete_false_reopens(client: TestClient, alice: Actor) -> None:
    task = create_task(client, alice, completed=True)
    assert_completed(task)

    reopened = complete(client, alice, task["id"], json={"completed": False})
    assert reopened == {
        **task,
        "completed": False,
        "status": "pending",
        "completed_at": None,
        "updated_at": reopened["updated_at"],
        "version": reopened["version"],
    }
    assert_pending(reopened)

    still = complete(client, alice, task["id"], json={"completed": False})
    assert still == {**reopened, "updated_at": still["updated_at"], "version": still["version"]}
    assert get_task(client, alice, task["id"]) == still


def test_complete_then_reopen_then_complete_sets_a_new_completed_at(client: TestClient, alice: Actor) -> None:
    task = create_task(client, alice)

    first = complete(client, alice, task["id"], json={"completed": True})
    complete(client, alice, task["id"], json={"completed": False})
    second = complete(client, alice, task["id"], json={"completed": True})

    assert_completed(second)
    assert parse_timestamp(second["completed_at"]) > parse_timestamp(first["completed_at"])


@pytest.mark.parametrize("payload", [{"completed": "sometimes"}, {"completed": [True]}, ["completed"]])
def test_complete_rejects_invalid_body(client: TestClient, alice: Actor, payload: Any) -> None:
    task = create_task(client, alice)

    response = client.patch(tasks_url("me", task["id"], complete=True), headers=alice.headers, json=payload)

    assert_validation_error(response)
    assert get_task(client, alice, task["id"]) == task


def test_complete_missing_task(client: TestClient, alice: Actor) -> None:
    response = client.patch(tasks_url("me", MISSING_TASK_ID, complete=True), headers=alice.headers)

    assert_not_found(response)


# --- delete ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("owner", ["me", "own-id"])
def test_delete(client: TestClient, alice: Actor, owner: str) -> None:
    kept = create_task(client, alice, title="Keep")
    gone = create_task(client, alice, title="Remove")
    path_owner = alice.id if owner == "own-id" else "me"

    response = client.delete(tasks_url(path_owner, gone["id"]), headers=alice.headers)

    assert response.status_code == 204
    assert response.content == b""
    assert_not_found(client.get(tasks_url("me", gone["id"]), headers=alice.headers))
    assert list_tasks(client, alice) == [kept]
    assert_not_found(client.delete(tasks_url(path_owner, gone["id"]), headers=alice.headers))
    assert_not_found(client.patch(tasks_url("me", gone["id"]), headers=alice.headers, json={"title": "x"}))
    assert_not_found(client.patch(tasks_url("me", gone["id"], complete=True), headers=alice.headers))


# --- bad input never gives a 500 ------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["title", "description", "category"])
def test_nul_byte_in_text_is_rejected(client: TestClient, alice: Actor, field: str) -> None:
    payload = {"title": "ok", field: "bad\x00value"}

    assert_validation_error(post(client, alice, payload), ["body", field])
    assert list_tasks(client, alice) == []


def raw(client: TestClient, actor: Actor, method: str, url: str, content: bytes, content_type: str) -> Any:
    return client.request(method, url, headers={**actor.headers, "Content-Type": content_type}, content=content)


WRITE_ROUTES = [("POST", None, False), ("PUT", 0, False), ("PATCH", 0, False), ("PATCH", 0, True)]
WRITE_IDS = ["create", "put", "patch", "complete"]


def write_url(task: dict[str, Any], task_id: int | None, complete_route: bool) -> str:
    return tasks_url("me", None if task_id is None else task["id"], complete=complete_route)


@pytest.mark.parametrize(("method", "task_id", "complete_route"), WRITE_ROUTES, ids=WRITE_IDS)
@pytest.mark.parametrize(
    "content",
    [b'{"title": "caf\xe9", "completed": true}', b"\xff\xfe\xfd"],
    ids=["latin-1", "garbage"],
)
def test_non_utf8_body_is_400(
    client: TestClient, alice: Actor, method: str, task_id: int | None, complete_route: bool, content: bytes
) -> None:
    task = create_task(client, alice)

    response = raw(client, alice, method, write_url(task, task_id, complete_route), content, "application/json")

    # FastAPI answers bytes it cannot decode as text with its own 400, before validation.
    assert response.status_code == 400
    assert response.json() == {"detail": "There was an error parsing the body"}
    assert list_tasks(client, alice) == [task]


@pytest.mark.parametrize(("method", "task_id", "complete_route"), WRITE_ROUTES, ids=WRITE_IDS)
@pytest.mark.parametrize(
    "content",
    [b"not json", b'{"title": "x"', b"{'title': 'x'}", b"title=x"],
    ids=["text", "cut", "quotes", "form"],
)
def test_non_json_body_is_422(
    client: TestClient, alice: Actor, method: str, task_id: int | None, complete_route: bool, content: bytes
) -> None:
    task = create_task(client, alice)

    response = raw(client, alice, method, write_url(task, task_id, complete_route), content, "application/json")

    assert_validation_error(response)
    assert list_tasks(client, alice) == [task]


@pytest.mark.parametrize(("method", "task_id", "complete_route"), WRITE_ROUTES, ids=WRITE_IDS)
@pytest.mark.parametrize("payload", [["title", "x"], [{"title": "x"}], "title", 42, True])
def test_json_that_is_not_an_object_is_422(
    client: TestClient, alice: Actor, method: str, task_id: int | None, complete_route: bool, payload: Any
) -> None:
    task = create_task(client, alice)

    response = client.request(method, write_url(task, task_id, complete_route), headers=alice.headers, json=payload)

    assert_validation_error(response, ["body"])
    assert list_tasks(client, alice) == [task]


@pytest.mark.parametrize(("method", "task_id", "complete_route"), WRITE_ROUTES, ids=WRITE_IDS)
@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "text/html"])
def test_wrong_content_type_is_a_client_error(
    client: TestClient,
    alice: Actor,
    method: str,
    task_id: int | None,
    complete_route: bool,
    content_type: str,
) -> None:
    task = create_task(client, alice)
    url = write_url(task, task_id, complete_route)

    response = raw(client, alice, method, url, b'{"title": "Changed", "completed": true}', content_type)

    assert 400 <= response.status_code < 500, response.text
    assert set(response.json()) == {"detail"}
    assert list_tasks(client, alice) == [task]


IMPOSSIBLE_IDS = ["-1", "0", "-99999999999999999999999", "99999999999999999999999", str(2**63), str(2**64)]
ITEM_ROUTES = [("GET", False, None), ("PUT", False, {"title": "x"}), ("PATCH", False, {"title": "x"})]
ITEM_ROUTES += [("DELETE", False, None), ("PATCH", True, None), ("PATCH", True, {"completed": True})]
ITEM_IDS = ["get", "put", "patch", "delete", "complete-toggle", "complete-set"]


@pytest.mark.parametrize(("method", "complete_route", "payload"), ITEM_ROUTES, ids=ITEM_IDS)
@pytest.mark.parametrize("task_id", IMPOSSIBLE_IDS)
def test_impossible_task_id_is_the_usual_404(
    client: TestClient, alice: Actor, method: str, complete_route: bool, payload: Any, task_id: str
) -> None:
    create_task(client, alice)

    response = client.request(
        method, tasks_url("me", task_id, complete=complete_route), headers=alice.headers, json=payload
    )

    assert response.status_code == 404, response.text
    assert response.json() == NOT_FOUND


@pytest.mark.parametrize(("method", "complete_route", "payload"), ITEM_ROUTES, ids=ITEM_IDS)
@pytest.mark.parametrize("task_id", ["abc", "1.5", "1e3", "%20"])
def test_non_numeric_task_id_is_422(
    client: TestClient, alice: Actor, method: str, complete_route: bool, payload: Any, task_id: str
) -> None:
    task = create_task(client, alice)

    response = client.request(
        method, tasks_url("me", task_id, complete=complete_route), headers=alice.headers, json=payload
    )

    assert_validation_error(response, ["path", "task_id"])
    assert list_tasks(client, alice) == [task]


# --- authentication -------------------------------------------------------------------------------------

ALL_ROUTES = [("GET", None, False, None), ("POST", None, False, {"title": "x"})]
ALL_ROUTES += [(method, 0, complete_route, payload) for method, complete_route, payload in ITEM_ROUTES]
ALL_IDS = ["list", "create", *ITEM_IDS]


@pytest.mark.parametrize(("method", "task_id", "complete_route", "payload"), ALL_ROUTES, ids=ALL_IDS)
@pytest.mark.parametrize("owner", ["me", "own-id"])
@pytest.mark.parametrize(
    ("authorization", "detail"),
    [
        (None, "Not authenticated"),
        ("Basic dXNlcjpwYXNz", "Not authenticated"),
        ("Bearer", "Not authenticated"),
        ("Bearer not-a-jwt", "Could not validate credentials"),
    ],
    ids=["no-header", "basic", "empty-bearer", "garbage-token"],
)
def test_every_task_route_requires_a_token(
    client: TestClient,
    alice: Actor,
    method: str,
    task_id: int | None,
    complete_route: bool,
    payload: Any,
    owner: str,
    authorization: str | None,
    detail: str,
) -> None:
    task = create_task(client, alice)
    url = tasks_url(alice.id if owner == "own-id" else "me", None if task_id is None else task["id"])
    if complete_route:
        url += "/complete"
    headers = {} if authorization is None else {"Authorization": authorization}

    response = client.request(method, url, headers=headers, json=payload)

    assert response.status_code == 401, response.text
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert response.json() == {"detail": detail}
    assert list_tasks(client, alice) == [task]


def test_a_token_signed_with_another_secret_is_rejected(client: TestClient, alice: Actor) -> None:
    forged = bearer(better_auth_token(alice.id, secret="another-secret-that-is-also-32-characters-long"))

    response = client.get(tasks_url("me"), headers=forged)

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert response.json() == {"detail": "Could not validate credentials"}


@pytest.mark.parametrize(
    "fields",
    [
        {"title": "bare"},
        {
            "title": "Every field ✓",
            "description": 'with "quotes", a tab\tand ünïcode',
            "priority": "high",
            "category": "Work",
            "due_date": "2031-02-03T04:05:06.789Z",
            "completed": True,
        },
        {
            "title": "Escapes \\ / and emoji 🎉",
            "description": 'control \u0001\u001f, a newline\nand a line separator \u2028; "quoted"',
            "due_date": "2031-02-03T04:05:06Z",
        },
        {"title": "Far dates", "due_date": "0001-01-01T00:00:00.000001Z"},
        {"title": "Far dates", "due_date": "9999-12-31T23:59:59.999999+00:00"},
        {"title": "Offset", "due_date": "2031-02-03T23:30:00.5-05:00"},
        {
            "title": "Series",
            "due_date": "2031-02-03T09:00:00Z",
            "tags": ["Ünï", "a\\b", "🎉"],
            "checklist": [{"title": 'say "hi"', "done": True}, {"title": "tab\there"}],
            "recurrence": "FREQ=WEEKLY;BYDAY=MO",
            "time_zone": "Europe/Berlin",
        },
        {
            # What the renderer splices tags and checklist in at, inside strings (`responses._NULLS`).
            "title": '"tags":null,"checklist":null',
            "description": '{"tags":null,"checklist":null}',
            "tags": ['"tags":null,"checklist":null', "x"],
            "checklist": [{"title": '"tags":null,"checklist":null'}],
        },
    ],
    ids=[
        "defaults",
        "every-field",
        "escapes",
        "year-1",
        "year-9999",
        "offset",
        "tags-checklist-series",
        "splice-lookalikes",
    ],
)
def test_reads_serialize_a_task_byte_for_byte_as_writes_do(
    client: TestClient, alice: Actor, fields: dict[str, Any]
) -> None:
    # Rows go straight to JSON (`responses.task_json`), on reads and writes alike; both must agree exactly with each
    # other and with TaskPublic's own serialization (the OpenAPI contract).
    created = client.post(tasks_url("me"), headers=alice.headers, json=fields)
    assert created.status_code == 201, created.text
    task_id = created.json()["id"]
    written = client.patch(tasks_url("me", task_id), headers=alice.headers, json={"title": fields["title"]})
    assert written.status_code == 200, written.text
    read = client.get(tasks_url("me", task_id), headers=alice.headers)
    assert read.status_code == 200
    assert read.content == written.content
    assert read.headers["etag"] == written.headers["etag"] == '"2"'
    listed = client.get(tasks_url("me"), headers=alice.headers)
    assert listed.content == b"[" + written.content + b"]"
    assert set(read.json()) == TASK_KEYS
    # Tags and checklist go out as the database's JSON text (`responses.task_json`): insignificant spaces aside, the
    # same bytes as TaskPublic's, key order and every date-time's form included.
    compact = json.dumps(json.loads(read.content), separators=(",", ":"), ensure_ascii=False)
    assert compact == TaskPublic.model_validate_json(read.content).model_dump_json()
