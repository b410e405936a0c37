"""Totals and statistics come from per-user counts kept by database triggers: they must stay exact through
every kind of write (create, edit, complete, trash, restore, delete, bulk, purge, user deletion)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import delete, func, update
from sqlmodel import Session, select

from tests.conftest import SharedSessionDatabase
from tests.factories import UserFactory
from tests.tasks.helpers import Actor, create_task, local_actor, tasks_url
from todo_api.auth.models import User
from todo_api.models import Task, TaskCount
from todo_api.tasks import service

# Filters answered from the counts; adding updated_since (every task qualifies) forces a real COUNT.
COMBINATIONS: list[dict[str, str]] = [
    {},
    {"trashed": "true"},
    {"status": "pending"},
    {"status": "completed"},
    {"completed": "true", "trashed": "true"},
    {"priority": "high"},
    {"priority": "low,medium"},
    {"category": "work"},
    {"category": "WORK", "priority": "high", "status": "pending"},
    {"category": "home", "trashed": "true"},
]
EVERYTHING = {"updated_since": "1970-01-01T00:00:00Z"}


def total(client: TestClient, actor: Actor, params: dict[str, str]) -> int:
    response = client.get(tasks_url("me"), headers=actor.headers, params={**params, "limit": 500})
    assert response.status_code == 200, response.text
    return int(response.headers["x-total-count"])


def listed(client: TestClient, actor: Actor, params: dict[str, str]) -> list[dict[str, Any]]:
    response = client.get(tasks_url("me"), headers=actor.headers, params={**params, "limit": 500})
    body: list[dict[str, Any]] = response.json()
    return body


def assert_counts_exact(client: TestClient, actor: Actor) -> None:
    for params in COMBINATIONS:
        counted = total(client, actor, params)
        scanned = total(client, actor, {"trashed": "false", **params, **EVERYTHING})
        assert counted == scanned == len(listed(client, actor, params)), params
    live = listed(client, actor, {})
    stats = client.get("/api/me/stats", headers=actor.headers).json()
    completed = sum(t["completed"] for t in live)
    categories: dict[str, int] = {}
    for task in live:
        key = task["category"] or "uncategorized"
        categories[key] = categories.get(key, 0) + 1
    assert stats["total"] == len(live)
    assert (stats["completed"], stats["pending"]) == (completed, len(live) - completed)
    assert stats["by_priority"] == {p: sum(t["priority"] == p for t in live) for p in ("low", "medium", "high")}
    assert stats["by_category"] == dict(sorted(categories.items()))


def test_counts_stay_exact_through_every_write(client: TestClient, users: UserFactory, db_session: Session) -> None:
    me, other = local_actor(users), local_actor(users)
    shapes = itertools.cycle(
        itertools.product(("low", "medium", "high"), ("work", "Work", "home", None), (False, True))
    )
    ids = []
    for _ in range(30):
        priority, category, done = next(shapes)
        ids.append(create_task(client, me, priority=priority, category=category, completed=done)["id"])
        create_task(client, other, priority=priority, category=category)
    assert_counts_exact(client, me)

    def call(method: str, url: str, **kwargs: Any) -> None:
        response = client.request(method, url, headers=me.headers, **kwargs)
        assert response.status_code in (200, 204), response.text

    call("PATCH", tasks_url("me", ids[0]), json={"category": "home", "priority": "high"})
    call("PUT", tasks_url("me", ids[1]), json={"category": None, "completed": True})
    call("PATCH", tasks_url("me", ids[2]), json={"title": "only the title"})
    call("PATCH", tasks_url("me", ids[3], complete=True))
    call("PATCH", tasks_url("me", ids[4], complete=True), json={"completed": True})
    call("DELETE", tasks_url("me", ids[5]))
    call("DELETE", tasks_url("me", ids[6]))
    call("POST", tasks_url("me", ids[6]) + "/restore")
    call("DELETE", tasks_url("me", ids[7]), params={"permanent": "true"})
    call("DELETE", tasks_url("me", ids[5]), params={"permanent": "true"})
    assert_counts_exact(client, me)

    for action, chunk in (
        ("complete", ids[8:16]),
        ("reopen", ids[10:20]),
        ("delete", ids[14:24]),
        ("restore", ids[20:22]),
    ):
        call("POST", tasks_url("me", "bulk"), json={"action": action, "ids": chunk})
        assert_counts_exact(client, me)

    db_session.exec(  # a trash old enough to be purged
        update(Task).where(Task.id.in_(ids[14:20])).values(trashed_at=datetime(2000, 1, 1, tzinfo=UTC))  # type: ignore[union-attr]
    )
    assert service.purge_trash(SharedSessionDatabase(db_session), older_than=datetime(2000, 1, 2, tzinfo=UTC)) == 6
    assert_counts_exact(client, me)
    assert_counts_exact(client, other)


def test_deleting_a_user_takes_their_tasks_and_counts(
    client: TestClient, users: UserFactory, db_session: Session
) -> None:
    """No route deletes accounts; the database must still allow it (the cascades and the triggers agree)."""
    me, other = local_actor(users), local_actor(users)
    for category in ("work", None):
        create_task(client, me, category=category)
        create_task(client, other, category=category)
    trashed = create_task(client, me)
    client.delete(tasks_url("me", trashed["id"]), headers=me.headers)

    db_session.exec(delete(User).where(User.id == me.id))  # type: ignore[arg-type]
    db_session.commit()

    for table, column in ((Task, Task.user_id), (TaskCount, TaskCount.user_id)):
        assert db_session.exec(select(func.count()).select_from(table).where(column == me.id)).one() == 0
    assert_counts_exact(client, other)
