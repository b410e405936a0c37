"""The schema of tags, checklists and recurring tasks (migration 0007), on the suite's database: `task_tags` follows
`tasks.tags` through the triggers alone, the CHECKs refuse what they must, and the new columns' defaults hold.

Rows are written with Core through `db_session` (rolled back after each test), as the API's statements would."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Connection, create_engine, delete, insert, inspect, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from todo_api.auth.models import User
from todo_api.auth.principal import OwnerScope
from todo_api.config import normalize_database_url
from todo_api.db import table
from todo_api.migrations import downgrade, upgrade
from todo_api.models import Task, TaskTag
from todo_api.responses import task_objects
from todo_api.tasks import service
from todo_api.tasks.models import TaskQuery

TASKS = table(Task)
TAGS = table(TaskTag)
USERS = table(User)
DUE = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)


@pytest.fixture
def conn(db_session: Session) -> Connection:
    return db_session.connection()


def new_user(conn: Connection) -> str:
    user_id = f"tags-{uuid.uuid4().hex}"
    conn.execute(insert(USERS).values(id=user_id, name="Tags"))
    return user_id


@pytest.fixture
def user_id(conn: Connection) -> str:
    return new_user(conn)


def new_task(conn: Connection, user_id: str, **values: Any) -> int:
    task_id: int = conn.execute(
        insert(TASKS).values(user_id=user_id, title="t", **values).returning(TASKS.c.id)
    ).scalar_one()
    return task_id


def tag_rows(conn: Connection, task_id: int) -> list[tuple[str, str]]:
    rows = conn.execute(
        select(TAGS.c.name, TAGS.c.name_lower).where(TAGS.c.task_id == task_id).order_by(TAGS.c.name_lower)
    )
    return [(row.name, row.name_lower) for row in rows]


def set_tags(conn: Connection, task_id: int, tags: list[Any]) -> None:
    conn.execute(update(TASKS).where(TASKS.c.id == task_id).values(tags=tags))


def set_values(conn: Connection, task_id: int, **values: Any) -> None:
    conn.execute(update(TASKS).where(TASKS.c.id == task_id).values(**values))


def live_rows(conn: Connection, task_id: int) -> list[tuple[str, bool]]:
    rows = conn.execute(
        select(TAGS.c.name_lower, TAGS.c.live).where(TAGS.c.task_id == task_id).order_by(TAGS.c.name_lower)
    )
    return [(row.name_lower, row.live) for row in rows]


def test_existing_and_new_tasks_default_to_no_tags_checklist_or_recurrence(conn: Connection, user_id: str) -> None:
    # Only the columns that existed before 0007: what an old row, or an INSERT that names none of them, gets.
    inserted = text(
        "INSERT INTO tasks (user_id, title, completed, priority, created_at, updated_at)"
        " VALUES (:user_id, 'old', false, 'low', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
    )
    conn.execute(inserted, {"user_id": user_id})
    task_id = conn.execute(select(TASKS.c.id).where(TASKS.c.user_id == user_id)).scalar_one()
    row = conn.execute(select(TASKS).where(TASKS.c.id == task_id)).one()
    assert (row.tags, row.checklist) == ([], [])
    assert (row.recurrence, row.recurrence_basis, row.time_zone) == (None, "due", "UTC")
    assert (row.series_id, row.series_start, row.occurrence, row.next_task_id) == (None, None, 1, None)
    assert tag_rows(conn, task_id) == []


def test_new_columns_round_trip(conn: Connection, user_id: str) -> None:
    checklist = [{"title": "Balcony", "done": False}, {"title": "Kitchen", "done": True}]
    first = new_task(conn, user_id, due_date=DUE, recurrence="FREQ=WEEKLY;BYDAY=MO,TH", time_zone="Europe/Berlin")
    task_id = new_task(
        conn,
        user_id,
        checklist=checklist,
        due_date=DUE,
        recurrence="FREQ=DAILY",
        recurrence_basis="completion",
        series_id=first,
        series_start=DUE,
        occurrence=2,
    )
    conn.execute(update(TASKS).where(TASKS.c.id == first).values(next_task_id=task_id))
    row = conn.execute(select(TASKS).where(TASKS.c.id == task_id)).one()
    assert row.checklist == checklist
    assert (row.recurrence, row.recurrence_basis, row.time_zone) == ("FREQ=DAILY", "completion", "UTC")
    assert (row.series_id, row.series_start, row.occurrence, row.next_task_id) == (first, DUE, 2, None)
    assert conn.execute(select(TASKS.c.next_task_id).where(TASKS.c.id == first)).scalar_one() == task_id


def test_insert_indexes_every_tag(conn: Connection, user_id: str) -> None:
    task_id = new_task(conn, user_id, tags=["errands", "Home", "Work"])
    untagged = new_task(conn, user_id)
    assert tag_rows(conn, task_id) == [("errands", "errands"), ("Home", "home"), ("Work", "work")]
    assert tag_rows(conn, untagged) == []
    owners = conn.execute(select(TAGS.c.user_id).distinct().where(TAGS.c.task_id == task_id)).scalars().all()
    assert owners == [user_id]


def test_a_multi_row_insert_indexes_each_task(conn: Connection, user_id: str) -> None:
    conn.execute(
        insert(TASKS),
        [
            {"user_id": user_id, "title": "a", "tags": ["x"]},
            {"user_id": user_id, "title": "b", "tags": []},
            {"user_id": user_id, "title": "c", "tags": ["X", "y"]},
        ],
    )
    ids = dict(conn.execute(select(TASKS.c.title, TASKS.c.id).where(TASKS.c.user_id == user_id)).all())
    assert tag_rows(conn, ids["a"]) == [("x", "x")]
    assert tag_rows(conn, ids["b"]) == []
    assert tag_rows(conn, ids["c"]) == [("X", "x"), ("y", "y")]


def test_updating_tags_replaces_the_rows(conn: Connection, user_id: str) -> None:
    task_id = new_task(conn, user_id, tags=["home", "Work"])
    other = new_task(conn, user_id, tags=["home"])
    set_tags(conn, task_id, ["Garden", "home"])
    assert tag_rows(conn, task_id) == [("Garden", "garden"), ("home", "home")]
    set_tags(conn, task_id, [])
    assert tag_rows(conn, task_id) == []
    set_tags(conn, task_id, ["Later"])
    assert tag_rows(conn, task_id) == [("Later", "later")]
    assert tag_rows(conn, other) == [("home", "home")]


def test_a_bulk_update_of_tags_reindexes_every_task(conn: Connection, user_id: str) -> None:
    ids = [new_task(conn, user_id, tags=tags) for tags in (["a"], [], ["b", "c"])]
    conn.execute(update(TASKS).where(TASKS.c.user_id == user_id).values(tags=["Same"]))
    assert [tag_rows(conn, task_id) for task_id in ids] == [[("Same", "same")]] * 3


def test_names_repeated_in_another_case_keep_the_first_spelling(conn: Connection, user_id: str) -> None:
    # The API never stores such an array; the triggers must still not fail on one.
    task_id = new_task(conn, user_id, tags=["Work", "work", "WORK", "home"])
    assert tag_rows(conn, task_id) == [("home", "home"), ("Work", "work")]
    set_tags(conn, task_id, ["b", "A", "a", "B", "b"])
    assert tag_rows(conn, task_id) == [("A", "a"), ("b", "b")]


def test_json_nulls_in_the_array_are_skipped(conn: Connection, user_id: str) -> None:
    task_id = new_task(conn, user_id, tags=[None, "kept"])
    assert tag_rows(conn, task_id) == [("kept", "kept")]


def test_lower_case_names_follow_the_database(conn: Connection, user_id: str, is_postgres: bool) -> None:
    task_id = new_task(conn, user_id, tags=["Ärger", "ÉTÉ"])
    if is_postgres:
        assert tag_rows(conn, task_id) == [("Ärger", "ärger"), ("ÉTÉ", "été")]
    else:  # SQLite's lower() folds ASCII letters only (documented in the migration)
        assert tag_rows(conn, task_id) == [("Ärger", "Ärger"), ("ÉTÉ", "ÉtÉ")]


def test_other_updates_leave_the_rows_alone(conn: Connection, user_id: str) -> None:
    task_id = new_task(conn, user_id, tags=["home", "work"])
    # Mark a row (tests only: the application never writes task_tags), so that rewriting it would show.
    conn.execute(update(TAGS).where(TAGS.c.task_id == task_id, TAGS.c.name_lower == "home").values(name="untouched"))
    now = datetime.now(UTC)
    for values in (
        {"title": "renamed", "completed": True, "priority": "high"},
        {"trashed_at": now},
        {"trashed_at": None, "checklist": [{"title": "x", "done": False}], "due_date": DUE, "recurrence": "FREQ=DAILY"},
        {"tags": ["home", "work"]},  # the same array: no change
    ):
        conn.execute(update(TASKS).where(TASKS.c.id == task_id).values(**values))
        assert tag_rows(conn, task_id) == [("untouched", "home"), ("work", "work")], values
    conn.execute(update(TASKS).where(TASKS.c.id == task_id).values(tags=TASKS.c.tags))
    assert tag_rows(conn, task_id) == [("untouched", "home"), ("work", "work")]
    set_tags(conn, task_id, ["home", "work", "new"])
    assert tag_rows(conn, task_id) == [("home", "home"), ("new", "new"), ("work", "work")]


def test_deleting_a_task_or_its_user_deletes_its_rows(conn: Connection, user_id: str) -> None:
    gone = new_task(conn, user_id, tags=["home"])
    kept = new_task(conn, user_id, tags=["home", "work"])
    other_user = new_user(conn)
    theirs = new_task(conn, other_user, tags=["home"])
    conn.execute(delete(TASKS).where(TASKS.c.id == gone))
    assert tag_rows(conn, gone) == []
    assert tag_rows(conn, kept) == [("home", "home"), ("work", "work")]
    conn.execute(delete(USERS).where(USERS.c.id == user_id))
    assert conn.execute(select(TAGS.c.task_id).where(TAGS.c.user_id == user_id)).all() == []
    assert tag_rows(conn, theirs) == [("home", "home")]


def test_live_follows_trash_restore_and_tag_changes(conn: Connection, user_id: str) -> None:
    now = datetime.now(UTC)
    task_id = new_task(conn, user_id, tags=["home", "Work"])
    born_trashed = new_task(conn, user_id, tags=["home"], trashed_at=now)
    untagged = new_task(conn, user_id)
    assert live_rows(conn, task_id) == [("home", True), ("work", True)]
    assert live_rows(conn, born_trashed) == [("home", False)]

    set_values(conn, task_id, trashed_at=now)
    assert live_rows(conn, task_id) == [("home", False), ("work", False)]
    set_values(conn, task_id, trashed_at=now + timedelta(seconds=1))  # still in the trash
    assert live_rows(conn, task_id) == [("home", False), ("work", False)]
    set_tags(conn, task_id, ["home", "later"])  # retagged in the trash
    assert live_rows(conn, task_id) == [("home", False), ("later", False)]
    set_values(conn, task_id, trashed_at=None)  # restored
    assert live_rows(conn, task_id) == [("home", True), ("later", True)]
    set_values(conn, task_id, title="renamed", completed=True, trashed_at=None)  # live, and stays so
    assert live_rows(conn, task_id) == [("home", True), ("later", True)]

    # Trash or restore and tags in one statement, in every combination.
    set_values(conn, task_id, trashed_at=now, tags=["moved"])
    assert live_rows(conn, task_id) == [("moved", False)]
    set_values(conn, task_id, trashed_at=None, tags=["back", "home"])
    assert live_rows(conn, task_id) == [("back", True), ("home", True)]
    set_values(conn, task_id, trashed_at=now, tags=[])
    assert live_rows(conn, task_id) == []
    set_values(conn, task_id, trashed_at=None, tags=["x"])
    assert live_rows(conn, task_id) == [("x", True)]
    set_values(conn, untagged, trashed_at=now, tags=["new"])
    assert live_rows(conn, untagged) == [("new", False)]
    set_values(conn, untagged, trashed_at=None, tags=[])
    assert live_rows(conn, untagged) == []

    # One statement trashing, then restoring, several tasks (one without tags, one already trashed).
    everyone = update(TASKS).where(TASKS.c.user_id == user_id)
    conn.execute(everyone.values(trashed_at=now))
    assert [live_rows(conn, n) for n in (task_id, born_trashed, untagged)] == [[("x", False)], [("home", False)], []]
    conn.execute(everyone.values(trashed_at=None))
    assert [live_rows(conn, n) for n in (task_id, born_trashed, untagged)] == [[("x", True)], [("home", True)], []]


# (tags, trashed, completed) of the tasks the counts are checked on: names in several spellings, trashed tasks with
# the same tags, untagged ones in both states.
COUNTED_TASKS: list[tuple[list[str], bool, bool]] = [
    (["Home"], False, False),
    (["home", "work"], False, True),
    (["work"], False, False),
    ([], False, False),
    ([], False, True),
    (["errand", "Work"], True, False),
    (["home"], True, False),
    ([], True, False),
    (["errand", "HOME", "work"], False, False),
    (["errand", "home"], False, True),
    (["Errand"], False, False),
]
COUNTED_QUERIES: list[dict[str, Any]] = [
    {"tag": ["home"]},
    {"tag": ["HOME", "work"]},
    {"tag": ["work", "home"]},
    {"tag": ["home", "work", "errand"]},
    {"tag": ["home", "Home"]},
    {"tag": ["nothing"]},
    {"tag": ["home", "nothing"]},
    {"tag": ["errand"], "status": "pending"},
    {"tag": ["home"], "trashed": True},
    {"tag": ["errand", "work"], "trashed": True},
    {"untagged": True},
    {"untagged": False},
    {"untagged": True, "trashed": True},
    {"untagged": False, "status": "completed"},
]


def expected_ids(tasks: dict[int, tuple[list[str], bool, bool]], query: dict[str, Any]) -> set[int]:
    wanted = {tag.lower() for tag in query.get("tag", [])}
    status = query.get("status")
    return {
        task_id
        for task_id, (tags, trashed, completed) in tasks.items()
        if trashed == query.get("trashed", False)
        and wanted <= {tag.lower() for tag in tags}
        and query.get("untagged", not tags) == (not tags)
        and status in (None, "completed" if completed else "pending")
    }


def test_tag_counts_and_the_tag_list_stay_exact(conn: Connection, user_id: str) -> None:
    """The live tag filters count from task_tags alone, the tag list reads it alone and `untagged` reads the array:
    each agrees with the tasks themselves, after trash, restore and tag changes too."""
    now = datetime.now(UTC)
    scope = OwnerScope(user_id)
    other_user = new_user(conn)
    new_task(conn, other_user, tags=["home", "work", "errand"])  # never counted
    tasks = {
        new_task(conn, user_id, tags=tags, trashed_at=now if trashed else None, completed=completed): (
            tags,
            trashed,
            completed,
        )
        for tags, trashed, completed in COUNTED_TASKS
    }

    def check() -> None:
        for query in COUNTED_QUERIES:
            expected = expected_ids(tasks, query)
            rows, total = service.list_tasks(conn, scope=scope, query=TaskQuery.model_validate(query))
            assert ({task["id"] for task in task_objects(rows)}, total) == (expected, len(expected)), query
            # One row per page: the total is counted (on the first page and, counted first, on the second).
            for offset in (0, 1):
                paged = TaskQuery.model_validate({**query, "limit": 1, "offset": offset})
                assert service.list_tasks(conn, scope=scope, query=paged)[1] == len(expected), (query, offset)
        live_tags: dict[str, list[str]] = {}
        for tags, trashed, _ in tasks.values():
            for tag in [] if trashed else tags:
                live_tags.setdefault(tag.lower(), []).append(tag)
        listed = service.list_tags(conn, scope=scope)
        assert {tag.name.lower(): tag.count for tag in listed} == {
            name: len(found) for name, found in live_tags.items()
        }
        assert all(tag.name in live_tags[tag.name.lower()] for tag in listed)
        assert [tag.name.lower() for tag in listed] == sorted(live_tags)

    check()
    first, second, *_, untagged_done, trashed_errand = list(tasks)[:6]
    # (task, new tags or None, trashed after): trash, restore, retag, and retag and trash at once.
    changes: list[tuple[int, list[str] | None, bool]] = [
        (first, None, True),
        (trashed_errand, None, False),
        (second, ["errand"], False),
        (untagged_done, ["home"], True),
    ]
    for task_id, new_tags, trashed in changes:
        tags, _, completed = tasks[task_id]
        values: dict[str, Any] = {"trashed_at": now if trashed else None}
        if new_tags is not None:
            values["tags"] = tags = new_tags
        set_values(conn, task_id, **values)
        tasks[task_id] = (tags, trashed, completed)
        check()


def refused(conn: Connection, statement: Any) -> None:
    """`statement` fails on a CHECK constraint (in a savepoint, so the test's transaction goes on)."""
    with pytest.raises(IntegrityError), conn.begin_nested():
        conn.execute(statement)


def test_a_recurring_task_needs_a_due_date(conn: Connection, user_id: str) -> None:
    refused(conn, insert(TASKS).values(user_id=user_id, title="t", recurrence="FREQ=DAILY"))
    task_id = new_task(conn, user_id, recurrence="FREQ=DAILY", due_date=DUE)
    refused(conn, update(TASKS).where(TASKS.c.id == task_id).values(due_date=None))
    one_off = new_task(conn, user_id)
    refused(conn, update(TASKS).where(TASKS.c.id == one_off).values(recurrence="FREQ=DAILY"))
    # Ending the series and dropping the due date at once is fine.
    conn.execute(update(TASKS).where(TASKS.c.id == task_id).values(recurrence=None, due_date=None))
    assert conn.execute(select(TASKS.c.recurrence, TASKS.c.due_date).where(TASKS.c.id == task_id)).one() == (
        None,
        None,
    )


def test_the_recurrence_basis_is_due_or_completion(conn: Connection, user_id: str) -> None:
    refused(conn, insert(TASKS).values(user_id=user_id, title="t", recurrence_basis="whenever"))
    task_id = new_task(conn, user_id, recurrence_basis="completion")
    refused(conn, update(TASKS).where(TASKS.c.id == task_id).values(recurrence_basis="Due"))
    assert conn.execute(select(TASKS.c.recurrence_basis).where(TASKS.c.id == task_id)).scalar_one() == "completion"


NEW_COLUMNS = {
    "tags",
    "checklist",
    "recurrence",
    "recurrence_basis",
    "time_zone",
    "series_id",
    "series_start",
    "occurrence",
    "next_task_id",
}
COUNT_TRIGGERS = {"task_counts_insert", "task_counts_update", "task_counts_delete"}
CHECKS = {"ck_tasks_recurrence_basis", "ck_tasks_recurrence_needs_due_date"}
TAG_TRIGGERS = {"task_tags_insert", "task_tags_update", "task_tags_trash"}
UNTAGGED_INDEX = "ix_tasks_live_untagged_user_id_created_at"


def triggers_and_checks(conn: Connection) -> tuple[set[str], set[str]]:
    """The triggers on `tasks`, and which of the 0007 CHECK constraints it has."""
    if conn.dialect.name == "postgresql":
        triggers = "SELECT tgname FROM pg_trigger WHERE tgrelid = 'tasks'::regclass AND NOT tgisinternal"
        checks = "SELECT conname FROM pg_constraint WHERE conrelid = 'tasks'::regclass AND contype = 'c'"
        return set(conn.execute(text(triggers)).scalars()), set(conn.execute(text(checks)).scalars()) & CHECKS
    triggers = "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'tasks'"
    ddl = conn.execute(text("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'tasks'")).scalar_one()
    return set(conn.execute(text(triggers)).scalars()), {name for name in CHECKS if name in ddl}


def task_indexes(conn: Connection) -> set[str]:
    if conn.dialect.name == "postgresql":
        return set(conn.execute(text("SELECT indexname FROM pg_indexes WHERE tablename = 'tasks'")).scalars())
    return set(
        conn.execute(text("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'tasks'")).scalars()
    )


def test_the_migration_keeps_existing_tasks_and_reverses(scratch_database_url: str) -> None:
    """Upgrading keeps the existing tasks (no tags, no recurrence), the count triggers and the search columns; the
    downgrade removes everything 0007 added and nothing else."""
    url = scratch_database_url
    upgrade(url, "0006_search_lower_columns")
    engine = create_engine(normalize_database_url(url))
    old_task = (
        "INSERT INTO tasks (user_id, title, completed, priority, created_at, updated_at)"
        " VALUES ('u1', :title, false, 'low', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
    )
    counts = "SELECT sum(n) FROM task_counts WHERE user_id = 'u1'"
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO users (id, name, created_at, updated_at)"
                    " VALUES ('u1', 'U', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
                )
            )
            conn.execute(text(old_task), [{"title": "Old ONE"}, {"title": "Old two"}])
        upgrade(url, "0007_tags_recurrence_checklists")
        with engine.begin() as conn:
            assert triggers_and_checks(conn) == (COUNT_TRIGGERS | TAG_TRIGGERS, CHECKS)
            assert UNTAGGED_INDEX in task_indexes(conn)
            rows = conn.execute(
                select(TASKS.c.tags, TASKS.c.checklist, TASKS.c.recurrence, TASKS.c.recurrence_basis).order_by(
                    TASKS.c.id
                )
            ).all()
            assert [tuple(row) for row in rows] == [([], [], None, "due")] * 2
            assert conn.execute(select(TAGS.c.task_id)).all() == []
            tagged = conn.execute(
                insert(TASKS).values(user_id="u1", title="New", tags=["B", "a"]).returning(TASKS.c.id)
            ).scalar_one()
            assert tag_rows(conn, tagged) == [("a", "a"), ("B", "b")]
            assert live_rows(conn, tagged) == [("a", True), ("b", True)]
            assert conn.execute(text(counts)).scalar_one() == 3  # the count triggers survived
            titles = conn.execute(text("SELECT title_lower FROM tasks ORDER BY id")).scalars().all()
            assert titles == ["old one", "old two", "new"]  # so did the generated columns

        downgrade(url, "0006_search_lower_columns")
        assert NEW_COLUMNS.isdisjoint(column["name"] for column in inspect(engine).get_columns("tasks"))
        assert "task_tags" not in inspect(engine).get_table_names()
        with engine.begin() as conn:
            assert triggers_and_checks(conn) == (COUNT_TRIGGERS, set())
            assert UNTAGGED_INDEX not in task_indexes(conn)
            conn.execute(text(old_task), {"title": "After"})
            assert conn.execute(text(counts)).scalar_one() == 4
            assert conn.execute(text("SELECT title_lower FROM tasks WHERE title = 'After'")).scalar_one() == "after"
        upgrade(url)
        with engine.begin() as conn:
            assert triggers_and_checks(conn)[1] == CHECKS
            assert conn.execute(select(TASKS.c.tags).where(TASKS.c.title == "New")).scalar_one() == []
    finally:
        engine.dispose()
