"""Trash: DELETE trashes, ?trashed=true lists, restore, ?permanent=true, sync (updated_since), purge."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, insert, update
from sqlmodel import Session, select

from tests.conftest import SharedSessionDatabase
from tests.factories import UserFactory
from tests.tasks.helpers import (
    ACTOR_PAIRS,
    MISSING_TASK_ID,
    Actor,
    assert_not_found,
    assert_utc_timestamp,
    create_task,
    get_task,
    list_tasks,
    local_actor,
    new_actor,
    tasks_url,
)
from todo_api import cli
from todo_api.auth.models import User
from todo_api.config import get_settings, normalize_database_url
from todo_api.migrations import upgrade
from todo_api.models import Task
from todo_api.tasks import service

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def trash(client: TestClient, actor: Actor, task_id: int) -> None:
    response = client.delete(tasks_url("me", task_id), headers=actor.headers)
    assert response.status_code == 204, response.text
    assert response.content == b""


def trashed(client: TestClient, actor: Actor, **params: Any) -> list[dict[str, Any]]:
    response = client.get(tasks_url("me"), headers=actor.headers, params={"trashed": "true", **params})
    assert response.status_code == 200, response.text
    body: list[dict[str, Any]] = response.json()
    return body


def restore_url(task_id: int | str, owner: str = "me") -> str:
    return tasks_url(owner, task_id) + "/restore"


# --- Moving to the trash ---


def test_delete_moves_the_task_to_the_trash(client: TestClient, actor: Actor) -> None:
    task = create_task(client, actor, title="Old plan")
    keep = create_task(client, actor, title="Keep")
    trash(client, actor, task["id"])

    assert [t["id"] for t in list_tasks(client, actor)] == [keep["id"]]
    in_trash = trashed(client, actor)
    assert [t["id"] for t in in_trash] == [task["id"]]
    assert in_trash[0]["version"] == 2
    trashed_at = assert_utc_timestamp(in_trash[0]["trashed_at"])
    assert in_trash[0]["updated_at"] == in_trash[0]["trashed_at"]
    assert abs(trashed_at - datetime.now(UTC)) < timedelta(minutes=5)
    assert {k: v for k, v in in_trash[0].items() if k not in {"version", "trashed_at", "updated_at"}} == {
        k: v for k, v in task.items() if k not in {"version", "trashed_at", "updated_at"}
    }


@pytest.mark.parametrize(
    ("method", "suffix", "body"),
    [
        ("GET", "", None),
        ("PUT", "", {"title": "x"}),
        ("PATCH", "", {"title": "x"}),
        ("PATCH", "/complete", None),
        ("DELETE", "", None),
    ],
)
def test_a_trashed_task_is_gone_from_the_single_task_routes(
    client: TestClient, actor: Actor, method: str, suffix: str, body: dict[str, Any] | None
) -> None:
    task = create_task(client, actor)
    trash(client, actor, task["id"])
    response = client.request(method, tasks_url("me", task["id"]) + suffix, headers=actor.headers, json=body)
    assert_not_found(response)
    assert trashed(client, actor)[0]["version"] == 2  # untouched


def test_a_trashed_task_leaves_the_stats(client: TestClient, actor: Actor) -> None:
    task = create_task(client, actor, priority="high", category="work")
    create_task(client, actor, priority="low")
    trash(client, actor, task["id"])
    stats = client.get("/api/me/stats", headers=actor.headers).json()
    assert stats["total"] == 1
    assert stats["by_priority"] == {"low": 1, "medium": 0, "high": 0}
    assert stats["by_category"] == {"uncategorized": 1}


def test_the_trash_listing_takes_the_same_filters_sorting_and_paging(client: TestClient, actor: Actor) -> None:
    tasks = [
        create_task(client, actor, title=f"Item {n}", priority=("low", "high")[n % 2], category="home")["id"]
        for n in range(5)
    ]
    create_task(client, actor, title="Live", priority="high")
    for task_id in tasks:
        trash(client, actor, task_id)

    assert [t["id"] for t in trashed(client, actor)] == tasks[::-1]
    assert [t["id"] for t in trashed(client, actor, priority="high")] == [tasks[3], tasks[1]]
    assert [t["id"] for t in trashed(client, actor, search="item 4")] == [tasks[4]]
    assert [t["id"] for t in trashed(client, actor, sort_by="created_at", sort_order="asc", limit=2)] == tasks[:2]
    response = client.get(tasks_url("me"), headers=actor.headers, params={"trashed": "true", "limit": 2, "offset": 2})
    assert response.headers["x-total-count"] == "5"
    assert 'rel="next"' in response.headers["link"] and 'rel="prev"' in response.headers["link"]
    assert [t["id"] for t in trashed(client, actor, trashed="true", sort_by="updated_at")] == tasks[::-1]
    live = client.get(tasks_url("me"), headers=actor.headers, params={"trashed": "false"}).json()
    assert [t["title"] for t in live] == ["Live"]


# --- Restore ---


def test_restore_brings_the_task_back(client: TestClient, actor: Actor) -> None:
    task = create_task(client, actor, title="Oops", completed=True)
    trash(client, actor, task["id"])
    response = client.post(restore_url(task["id"]), headers=actor.headers)
    assert response.status_code == 200, response.text
    restored = response.json()
    assert response.headers["etag"] == '"3"'
    assert restored["version"] == 3
    assert restored["trashed_at"] is None
    assert restored["completed"] is True and restored["completed_at"] == task["completed_at"]
    assert get_task(client, actor, task["id"]) == restored
    assert trashed(client, actor) == []


def test_restore_of_a_task_not_in_the_trash_is_404(client: TestClient, actor: Actor) -> None:
    live = create_task(client, actor)
    assert_not_found(client.post(restore_url(live["id"]), headers=actor.headers))
    assert_not_found(client.post(restore_url(MISSING_TASK_ID), headers=actor.headers))
    assert_not_found(client.post(restore_url(-1), headers=actor.headers))
    assert_not_found(client.post(restore_url(2**64), headers=actor.headers))
    assert get_task(client, actor, live["id"])["version"] == 1


def test_restore_is_not_repeatable(client: TestClient, actor: Actor) -> None:
    task = create_task(client, actor)
    trash(client, actor, task["id"])
    assert client.post(restore_url(task["id"]), headers=actor.headers).status_code == 200
    assert_not_found(client.post(restore_url(task["id"]), headers=actor.headers))


# --- Permanent delete ---


def test_permanent_delete_of_a_live_task(client: TestClient, actor: Actor) -> None:
    task = create_task(client, actor)
    response = client.delete(tasks_url("me", task["id"]), headers=actor.headers, params={"permanent": "true"})
    assert response.status_code == 204
    assert list_tasks(client, actor) == []
    assert trashed(client, actor) == []
    assert_not_found(client.post(restore_url(task["id"]), headers=actor.headers))


def test_permanent_delete_from_the_trash(client: TestClient, actor: Actor) -> None:
    task = create_task(client, actor)
    trash(client, actor, task["id"])
    response = client.delete(tasks_url("me", task["id"]) + "?permanent=true", headers=actor.headers)
    assert response.status_code == 204
    assert trashed(client, actor) == []
    again = client.delete(tasks_url("me", task["id"]) + "?permanent=true", headers=actor.headers)
    assert_not_found(again)


def test_permanent_false_is_a_plain_trash(client: TestClient, actor: Actor) -> None:
    task = create_task(client, actor)
    assert client.delete(tasks_url("me", task["id"]) + "?permanent=false", headers=actor.headers).status_code == 204
    assert [t["id"] for t in trashed(client, actor)] == [task["id"]]


def test_permanent_must_be_a_boolean(client: TestClient, actor: Actor) -> None:
    task = create_task(client, actor)
    response = client.delete(tasks_url("me", task["id"]) + "?permanent=forever", headers=actor.headers)
    assert response.status_code == 422
    assert get_task(client, actor, task["id"])["version"] == 1


@pytest.mark.parametrize("task_id", [MISSING_TASK_ID, 0, -5, 2**64])
def test_permanent_delete_of_a_missing_task_is_404(client: TestClient, actor: Actor, task_id: int) -> None:
    assert_not_found(client.delete(tasks_url("me", task_id) + "?permanent=true", headers=actor.headers))


def test_ids_are_never_reused(client: TestClient, actor: Actor) -> None:
    task = create_task(client, actor)
    client.delete(tasks_url("me", task["id"]) + "?permanent=true", headers=actor.headers)
    assert create_task(client, actor)["id"] > task["id"]


# --- Sync: updated_since ---


def test_updated_since_reports_changes_and_deletions(client: TestClient, actor: Actor) -> None:
    unchanged = create_task(client, actor, title="unchanged")
    edited = create_task(client, actor, title="to edit")
    deleted = create_task(client, actor, title="to trash")
    trashed_before = create_task(client, actor, title="trashed long ago")
    trash(client, actor, trashed_before["id"])
    checkpoint = max(t["updated_at"] for t in [*list_tasks(client, actor), *trashed(client, actor)])
    since = (datetime.fromisoformat(checkpoint) + timedelta(microseconds=1)).isoformat()

    client.patch(tasks_url("me", edited["id"]), headers=actor.headers, json={"title": "edited"})
    trash(client, actor, deleted["id"])
    created = create_task(client, actor, title="new")

    response = client.get(tasks_url("me"), headers=actor.headers, params={"updated_since": since})
    assert response.status_code == 200
    changes = {t["id"]: t for t in response.json()}
    assert set(changes) == {edited["id"], deleted["id"], created["id"]}
    assert response.headers["x-total-count"] == "3"
    assert changes[deleted["id"]]["trashed_at"] is not None
    assert changes[edited["id"]]["trashed_at"] is None
    assert unchanged["id"] not in changes

    # Inclusive: a task updated exactly at `updated_since` is included.
    exact = client.get(
        tasks_url("me"), headers=actor.headers, params={"updated_since": changes[created["id"]]["updated_at"]}
    )
    assert created["id"] in [t["id"] for t in exact.json()]

    only_live = client.get(
        tasks_url("me"), headers=actor.headers, params={"updated_since": since, "trashed": "false"}
    ).json()
    assert {t["id"] for t in only_live} == {edited["id"], created["id"]}
    only_trash = client.get(
        tasks_url("me"), headers=actor.headers, params={"updated_since": since, "trashed": "true"}
    ).json()
    assert [t["id"] for t in only_trash] == [deleted["id"]]


def test_updated_since_reports_restores(client: TestClient, actor: Actor) -> None:
    task = create_task(client, actor)
    trash(client, actor, task["id"])
    since = trashed(client, actor)[0]["trashed_at"]
    client.post(restore_url(task["id"]), headers=actor.headers)
    changes = client.get(tasks_url("me"), headers=actor.headers, params={"updated_since": since}).json()
    assert [(t["id"], t["trashed_at"]) for t in changes] == [(task["id"], None)]


def test_updated_since_with_a_date_and_tz(client: TestClient, actor: Actor) -> None:
    task = create_task(client, actor)
    tomorrow = (datetime.now(UTC) + timedelta(days=2)).date().isoformat()
    assert client.get(tasks_url("me"), headers=actor.headers, params={"updated_since": tomorrow}).json() == []
    response = client.get(
        tasks_url("me"), headers=actor.headers, params={"updated_since": "2000-01-01", "tz": "Asia/Kolkata"}
    )
    assert [t["id"] for t in response.json()] == [task["id"]]


# --- Isolation ---


@pytest.mark.parametrize("pair", ACTOR_PAIRS)
@pytest.mark.parametrize(
    ("method", "path", "params"),
    [
        ("POST", "/restore", {}),
        ("DELETE", "", {"permanent": "true"}),
        ("DELETE", "", {}),
    ],
)
def test_another_users_trash_is_the_same_404(
    client: TestClient,
    users: UserFactory,
    pair: tuple[str, str],
    method: str,
    path: str,
    params: dict[str, str],
) -> None:
    me, other = (new_actor(kind, client, users) for kind in pair)
    theirs = create_task(client, other)
    trash(client, other, theirs["id"])
    missing = client.request(method, tasks_url("me", MISSING_TASK_ID) + path, headers=me.headers, params=params)
    for owner in ("me", other.id):
        response = client.request(method, tasks_url(owner, theirs["id"]) + path, headers=me.headers, params=params)
        assert_not_found(response)
        assert response.content == missing.content
    listing = client.get(tasks_url(other.id), headers=me.headers, params={"trashed": "true"})
    assert listing.content == missing.content
    assert client.get(tasks_url("me"), headers=me.headers, params={"trashed": "true"}).json() == []
    assert [t["id"] for t in trashed(client, other)] == [theirs["id"]]


# --- purge-trash ---


def _age_trash(session: Session, task_ids: list[int], when: datetime) -> None:
    session.exec(update(Task).where(Task.id.in_(task_ids)).values(trashed_at=when))  # type: ignore[union-attr]
    session.commit()


def test_purge_trash_deletes_what_was_trashed_before_the_cutoff(
    client: TestClient, actor: Actor, users: UserFactory, db_session: Session
) -> None:
    other = local_actor(users)
    old = [create_task(client, actor, title=f"old {n}")["id"] for n in range(3)]
    recent = create_task(client, actor, title="recent")["id"]
    live = create_task(client, actor, title="live")["id"]
    theirs = create_task(client, other, title="theirs, old")["id"]
    for task_id in [*old, recent]:
        trash(client, actor, task_id)
    trash(client, other, theirs)
    # Tests share one database: a date no other test's trash has, so the count is exact.
    _age_trash(db_session, [*old, theirs], datetime(2000, 1, 1, tzinfo=UTC))

    purged = service.purge_trash(
        SharedSessionDatabase(db_session), older_than=datetime(2000, 1, 2, tzinfo=UTC), batch_size=2
    )

    assert purged == 4
    assert [t["id"] for t in trashed(client, actor)] == [recent]
    assert [t["id"] for t in list_tasks(client, actor)] == [live]
    assert trashed(client, other) == []


def _seed(url: str) -> dict[str, int]:
    """A user with a live task and tasks trashed 40 and 10 days ago, written straight to the database."""
    upgrade(url)
    engine = create_engine(normalize_database_url(url))
    now = datetime.now(UTC)
    ids = {}
    with Session(engine) as session:
        user_id = str(uuid.uuid4())
        session.exec(
            insert(User).values(id=user_id, email=f"{user_id}@example.com", name="Cron", created_at=now, updated_at=now)
        )
        for name, trashed_at in [
            ("live", None),
            ("forty", now - timedelta(days=40)),
            ("ten", now - timedelta(days=10)),
        ]:
            ids[name] = session.exec(
                insert(Task)
                .values(
                    user_id=user_id,
                    title=name,
                    completed=False,
                    priority="medium",
                    created_at=now,
                    updated_at=now,
                    version=1,
                    trashed_at=trashed_at,
                )
                .returning(Task.id)
            ).scalar_one()
        session.commit()
    engine.dispose()
    return ids


def _remaining(url: str) -> set[int]:
    engine = create_engine(normalize_database_url(url))
    with Session(engine) as session:
        remaining = set(session.exec(select(Task.id)).all())
    engine.dispose()
    return remaining


@pytest.fixture
def cli_env(scratch_database_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[str]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATABASE_URL", scratch_database_url)
    monkeypatch.setenv("ENVIRONMENT", "test")
    monkeypatch.setenv("BETTER_AUTH_SECRET", "cron-secret-that-is-at-least-32-characters")
    monkeypatch.delenv("TRASH_RETENTION_DAYS", raising=False)
    get_settings.cache_clear()
    yield scratch_database_url
    get_settings.cache_clear()


def test_purge_trash_command_uses_trash_retention_days(
    cli_env: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = _seed(cli_env)
    assert cli.main(["purge-trash"]) == 0
    assert capsys.readouterr().out == "purged 1 task(s) trashed more than 30 day(s) ago\n"
    assert _remaining(cli_env) == {ids["live"], ids["ten"]}

    monkeypatch.setenv("TRASH_RETENTION_DAYS", "7")
    get_settings.cache_clear()
    assert cli.main(["purge-trash"]) == 0
    assert capsys.readouterr().out == "purged 1 task(s) trashed more than 7 day(s) ago\n"
    assert _remaining(cli_env) == {ids["live"]}


def test_purge_trash_days_option(cli_env: str, capsys: pytest.CaptureFixture[str]) -> None:
    ids = _seed(cli_env)
    assert cli.main(["purge-trash", "--days", "0"]) == 0
    assert capsys.readouterr().out == "purged 2 task(s) trashed more than 0 day(s) ago\n"
    assert _remaining(cli_env) == {ids["live"]}
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["purge-trash", "--days", "-1"])
    assert exit_info.value.code == 2


def test_purge_trash_as_cron_runs_it(scratch_database_url: str, tmp_path: Path) -> None:
    ids = _seed(scratch_database_url)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "BETTER_AUTH", "ENVIRONMENT"))}
    env.update(DATABASE_URL=scratch_database_url, TRASH_RETENTION_DAYS="20", LOG_LEVEL="WARNING")
    result = subprocess.run(
        [sys.executable, "-m", "todo_api", "purge-trash"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "purged 1 task(s) trashed more than 20 day(s) ago\n"
    assert _remaining(scratch_database_url) == {ids["live"], ids["ten"]}


def test_purge_trash_works_on_the_default_sqlite_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """With no DATABASE_URL it purges ./todo.db, like `serve` uses it; it never migrates (a cron job must not change
    the schema): an unmigrated database is refused with a clear line, and purged once `migrate` ran."""
    monkeypatch.chdir(tmp_path)
    for name in ("DATABASE_URL", "TRASH_RETENTION_DAYS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ENVIRONMENT", "test")
    monkeypatch.setenv("BETTER_AUTH_SECRET", "cron-secret-that-is-at-least-32-characters")
    get_settings.cache_clear()
    try:
        assert cli.main(["purge-trash"]) == 1
        assert capsys.readouterr().err == "todo-api: the database is not migrated: run `todo-api migrate`\n"
        assert cli.main(["migrate"]) == 0
        capsys.readouterr()
        assert cli.main(["purge-trash"]) == 0
    finally:
        get_settings.cache_clear()
    assert capsys.readouterr().out == "purged 0 task(s) trashed more than 30 day(s) ago\n"
    assert _remaining(f"sqlite:///{tmp_path / 'todo.db'}") == set()
