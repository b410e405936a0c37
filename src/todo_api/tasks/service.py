"""Task reads and writes, always within one owner's `OwnerScope`: another user's task is indistinguishable from none.

Every function takes the route's connection and runs the statements of `tasks.queries` through `scope.rows`; none
commits (the route's block does). Reads return rows of `queries.PUBLIC_COLUMNS`, rendered by `responses`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Row
from sqlalchemy.exc import IntegrityError

from todo_api.auth.principal import OwnerScope
from todo_api.db import Database, utcnow
from todo_api.errors import NotFound, PreconditionFailed, Unauthorized, UnprocessableEntity
from todo_api.responses import task_headers, task_json
from todo_api.tasks import queries, reminders
from todo_api.tasks.models import (
    BulkAction,
    PriorityCounts,
    TagPublic,
    TaskCreate,
    TaskQuery,
    TaskStats,
    TaskUpdate,
    check_series,
    tag_set,
)
from todo_api.tasks.recurrence import next_due

TASK_NOT_FOUND = "Task not found"
TAG_NOT_FOUND = "Tag not found"
RECURRING_NEEDS_DUE_DATE = "a recurring task needs a due_date"
MAX_ID = 2**63 - 1
PURGE_BATCH_SIZE = 1000

IfMatch = frozenset[int] | None
"""The versions a conditional write accepts (from `If-Match`); None means any."""


def _id(task_id: int) -> int:
    """An id no row can have (negative, beyond 64-bit) is just another missing task (0), never a database error."""
    return task_id if 0 < task_id <= MAX_ID else 0


# --- One task ---


def get_task(conn: Connection, *, scope: OwnerScope, task_id: int) -> Row[Any]:
    row = scope.first(conn, queries.find_task("live"), {"task_id": _id(task_id)})
    if row is None:
        raise NotFound(TASK_NOT_FOUND)
    return row


def create_task(conn: Connection, *, scope: OwnerScope, data: TaskCreate) -> Row[Any]:
    now = utcnow()
    values = data.model_dump(mode="python")
    values["reminders"] = reminders.plan(data.reminders, [], data.due_date, now)
    values.update(priority=data.priority.value, completed_at=now if data.completed else None, version=1)
    values.update(created_at=now, updated_at=now, trashed_at=None)
    series_start = data.due_date if data.recurrence is not None else None
    values.update(series_id=None, series_start=series_start, occurrence=1, next_task_id=None)
    return _insert(conn, scope, values)


def _insert(conn: Connection, scope: OwnerScope, values: dict[str, Any]) -> Row[Any]:
    row = scope.first(conn, queries.INSERT_TASK, values)
    if row is None:  # the caller was proven live after all: a session revoked and restored cannot happen
        raise Unauthorized()
    return row


def update_task(conn: Connection, *, scope: OwnerScope, task_id: int, data: TaskUpdate, if_match: IfMatch) -> Row[Any]:
    """PUT and PATCH alike: the fields sent change, the rest stay."""
    changes = data.model_dump(exclude_unset=True)
    completed = changes.pop("completed", None)
    if "priority" in changes:
        changes["priority"] = changes["priority"].value
    now = utcnow()
    rule_against_current = changes.get("recurrence") is not None and "due_date" not in changes
    if rule_against_current or "reminders" in changes or "due_date" in changes:
        current = scope.first(conn, queries.LOCK_TASK, {"task_id": _id(task_id)})
        if current is not None:  # else the update answers 404
            if rule_against_current:
                _check_rule_against(current, changes)
            _plan_reminders(current, changes, data, now)
    values = {f"new_{name}": value for name, value in changes.items()}
    if completed is not None:
        values.update(new_completed=completed, new_completed_at=now if completed else None)
    completion: queries.Completion = None if completed is None else "completed"
    return _change(conn, scope, task_id, "live", tuple(sorted(changes)), completion, values, if_match, now)


def set_completion(
    conn: Connection, *, scope: OwnerScope, task_id: int, completed: bool | None, if_match: IfMatch
) -> Row[Any]:
    """`completed=None` toggles."""
    now = utcnow()
    if completed is None:
        return _change(conn, scope, task_id, "live", (), "toggle", {}, if_match, now)
    values = {"new_completed": completed, "new_completed_at": now if completed else None}
    return _change(conn, scope, task_id, "live", (), "completed", values, if_match, now)


def restore_task(conn: Connection, *, scope: OwnerScope, task_id: int, if_match: IfMatch) -> Row[Any]:
    """Bring a task back from the trash (404 if it is not in the trash)."""
    return _change(conn, scope, task_id, "trashed", ("trashed_at",), None, {"new_trashed_at": None}, if_match, utcnow())


def trash_task(conn: Connection, *, scope: OwnerScope, task_id: int, if_match: IfMatch) -> Row[Any]:
    """Move a live task to the trash (404 if it is not live)."""
    now = utcnow()
    return _change(conn, scope, task_id, "live", ("trashed_at",), None, {"new_trashed_at": now}, if_match, now)


def delete_task(conn: Connection, *, scope: OwnerScope, task_id: int, permanent: bool, if_match: IfMatch) -> None:
    """Move the task to the trash, or (`permanent`) delete it for good, live or trashed."""
    if not permanent:
        trash_task(conn, scope=scope, task_id=task_id, if_match=if_match)
        return
    params: dict[str, Any] = {"task_id": _id(task_id)}
    if if_match is not None:
        params["versions"] = sorted(if_match)
    if not scope.rows(conn, queries.delete_task(conditional=if_match is not None), params):
        raise _not_applied(conn, scope, task_id, "any")


def _change(
    conn: Connection,
    scope: OwnerScope,
    task_id: int,
    state: queries.State,
    changes: tuple[str, ...],
    completion: queries.Completion,
    values: dict[str, Any],
    if_match: IfMatch,
    now: datetime,
) -> Row[Any]:
    """Change one task in a single `UPDATE ... WHERE id AND owner AND state [AND version IN (If-Match)]`."""
    statement = queries.update_task(state, changes, completion, conditional=if_match is not None)
    params = {**values, "task_id": _id(task_id), "now": now}
    if if_match is not None:
        params["versions"] = sorted(if_match)
    try:
        row = scope.first(conn, statement, params)
    except IntegrityError:  # ck_tasks_recurrence_needs_due_date: the block rolls the statement back
        raise UnprocessableEntity(RECURRING_NEEDS_DUE_DATE) from None
    if row is None:
        raise _not_applied(conn, scope, task_id, state)
    return row if completion is None else _follow(conn, scope, row, now)


def _check_rule_against(current: Row[Any], changes: dict[str, Any]) -> None:
    """A rule set without a due date in the same request is checked against the task's own (422 if it has none or
    the rule never occurs after it)."""
    try:
        check_series(changes["recurrence"], current.due_date, changes.get("time_zone", current.time_zone))
    except ValueError as exc:
        raise UnprocessableEntity(str(exc)) from None


def _plan_reminders(current: Row[Any], changes: dict[str, Any], data: TaskUpdate, now: datetime) -> None:
    """The reminders sent, or the task's own when only its due date changes, planned against the due date it will
    have (422 for a `before_due` without one)."""
    stored = json.loads(current.reminders)
    due = changes["due_date"] if "due_date" in changes else current.due_date
    wanted = data.reminders if data.reminders is not None else stored
    try:
        planned = reminders.plan(wanted, stored, due, now)
    except ValueError as exc:
        raise UnprocessableEntity(str(exc)) from None
    if "reminders" in changes or planned != stored:
        changes["reminders"] = planned


def _follow(conn: Connection, scope: OwnerScope, row: Row[Any], now: datetime) -> Row[Any]:
    """A recurring task just completed is followed by the series' next one, in the same transaction: its title,
    description, priority, category, tags, checklist (every item undone) and rule, at the next due date. Once
    (`next_task_id`): completing it again, after a reopen, creates no second one. Returns the completed task."""
    if not (row.completed and row.recurrence and row.next_task_id is None and row.due_date is not None):
        return row
    series_start = row.series_start or row.due_date
    due = next_due(
        row.recurrence,
        basis=row.recurrence_basis,
        time_zone=row.time_zone,
        series_start=series_start,
        due=row.due_date,
        completed_at=row.completed_at or now,
        occurrence_index=row.occurrence,
    )
    if due is None:  # the series has ended
        return row
    follower = _insert(
        conn,
        scope,
        {
            "title": row.title,
            "description": row.description,
            "completed": False,
            "priority": row.priority,
            "category": row.category,
            "due_date": due,
            "completed_at": None,
            "created_at": now,
            "updated_at": now,
            "version": 1,
            "trashed_at": None,
            "tags": json.loads(row.tags),  # JSON text (`queries.PUBLIC_COLUMNS`)
            "checklist": [{**item, "done": False} for item in json.loads(row.checklist)],
            "reminders": reminders.carried(json.loads(row.reminders), due),
            "recurrence": row.recurrence,
            "recurrence_basis": row.recurrence_basis,
            "time_zone": row.time_zone,
            "series_id": row.series_id or row.id,
            "series_start": series_start,
            "occurrence": row.occurrence + 1,
            "next_task_id": None,
        },
    )
    linked = scope.first(conn, queries.LINK_NEXT, {"task_id": row.id, "follower_id": follower.id})
    return row if linked is None else linked


def _not_applied(conn: Connection, scope: OwnerScope, task_id: int, state: queries.State) -> Exception:
    """Why a write matched nothing: the task is not there in that state (404, like any missing task), or `If-Match`
    named another version (412, with the current task so the client can merge)."""
    current = scope.first(conn, queries.find_task(state), {"task_id": _id(task_id)})
    if current is None:
        return NotFound(TASK_NOT_FOUND)
    return PreconditionFailed(task_json(current), headers=task_headers(current.version))


# --- Many tasks ---


def bulk_update(
    conn: Connection, *, scope: OwnerScope, action: BulkAction, ids: Sequence[int], tag: str | None = None
) -> int:
    """Apply `action` to the owner's tasks among `ids`; returns how many actually changed. Ids that are not the
    owner's (or do not exist) match nothing. Completed recurring tasks are followed by their next ones."""
    wanted = sorted({task_id for task_id in ids if _id(task_id)})
    now = utcnow()
    if action in (BulkAction.tag, BulkAction.untag):
        assert tag is not None  # TaskBulk requires it
        rows = scope.rows(conn, queries.TAGS_OF_LIVE, {"ids": wanted})
        change = _with_tag if action is BulkAction.tag else _without_tag
        return _retag(conn, scope, rows, lambda tags: change(tags, tag), now)
    changed = scope.rows(conn, queries.BULK[action], {"ids": wanted, "now": now})
    if action is BulkAction.complete:
        for row in changed:
            _follow(conn, scope, row, now)
    return len(changed)


# --- Tags ---


def _key(tag: str) -> str:
    return tag.lower()


def _with_tag(tags: list[str], tag: str) -> list[str]:
    return tag_set([*tags, tag])  # a spelling the task has already stays


def _without_tag(tags: list[str], tag: str) -> list[str]:
    return [t for t in tags if _key(t) != _key(tag)]


def _retag(
    conn: Connection,
    scope: OwnerScope,
    rows: Sequence[Row[Any]],
    change: Callable[[list[str]], list[str]],
    now: datetime,
) -> int:
    """Give each task (`rows` of id and tags, locked) its changed tags; each one that changes gets version + 1."""
    changed = 0
    for row in rows:
        task_id, tags = row.id, row.tags
        new_tags = change(list(tags))
        if new_tags != list(tags):
            scope.rows(conn, queries.SET_TAGS, {"task_id": task_id, "new_tags": new_tags, "now": now})
            changed += 1
    return changed


def list_tags(conn: Connection, *, scope: OwnerScope) -> list[TagPublic]:
    tags = (tuple(row) for row in scope.rows(conn, queries.LIST_TAGS, {}))
    return [TagPublic(name=name, count=count) for name, count in tags]


def rename_tag(conn: Connection, *, scope: OwnerScope, name: str, new_name: str) -> TagPublic:
    """Rename the tag on every task that has it (merging into a tag of the new name a task already has), in one
    transaction with each task locked; 404 when no task has it."""
    rows = scope.rows(conn, queries.TAGGED, {"tag": name})
    if not rows:
        raise NotFound(TAG_NOT_FOUND)

    def renamed(tags: list[str]) -> list[str]:
        kept = [t for t in tags if _key(t) not in (_key(name), _key(new_name))]
        return tag_set([*kept, new_name])

    _retag(conn, scope, rows, renamed, utcnow())
    return TagPublic(name=new_name, count=sum(1 for row in rows if row.live))


def delete_tag(conn: Connection, *, scope: OwnerScope, name: str) -> None:
    """Take the tag off every task that has it; 404 when no task has it."""
    rows = scope.rows(conn, queries.TAGGED, {"tag": name})
    if not rows:
        raise NotFound(TAG_NOT_FOUND)
    _retag(conn, scope, rows, lambda tags: _without_tag(tags, name), utcnow())


def list_tasks(conn: Connection, *, scope: OwnerScope, query: TaskQuery) -> tuple[Sequence[Row[Any]], int]:
    """One page of the owner's tasks matching `query` (rows of `queries.LISTED_COLUMNS`), and how many match in
    all."""
    filters, params = _filters(query, utcnow())
    shape = (filters, query.sort_by, query.sort_order == "desc")
    from_tags = queries.counted_from_tags(filters)
    if query.offset == 0 and not from_tags:
        # The first page, with one row more than asked: when every match fits on it (the usual todo list), that is
        # the total, and no count is needed.
        page = scope.rows(
            conn,
            queries.page(*shape, from_end=False),
            {**params, "offset": 0, "limit": query.limit + 1},
        )
        if len(page) <= query.limit:
            return page, len(page)
        return page[: query.limit], _total(conn, scope, filters, params)
    # A list of live tasks by tags alone is counted first (from task_tags alone, cheap), so that its page can read a
    # few matches as one set (`queries.FEW_TAGGED`).
    total = _total(conn, scope, filters, params)
    if query.offset >= total:
        return [], total
    if from_tags and total <= queries.FEW_TAGGED:
        shape = (queries.few_tagged(filters), query.sort_by, query.sort_order == "desc")
    offset, limit = query.offset, min(query.limit, total - query.offset)
    from_end = offset > total // 2
    if from_end:
        # A deep page is read from the other end (offset 90,000 of 100,000 walks 10,000 entries, not 90,000).
        offset = total - offset - limit
    page = scope.rows(conn, queries.page(*shape, from_end=from_end), {**params, "offset": offset, "limit": limit})
    return page, total


def _total(conn: Connection, scope: OwnerScope, filters: tuple[str, ...], params: dict[str, Any]) -> int:
    rows = scope.rows(conn, queries.total(filters), {**params, "trashed": "trashed" in filters})
    return int(rows[0][0]) if rows else 0


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _filters(query: TaskQuery, now: datetime) -> tuple[tuple[str, ...], dict[str, Any]]:
    """The names of the `queries.FILTERS` that `query` asks for, and their bind parameters."""
    names: list[str] = []
    params: dict[str, Any] = {}
    if query.trashed:
        names.append("trashed")
    elif query.trashed is False or query.updated_since is None:
        names.append("live")
    # else: a sync (`updated_since`) also reports the tasks trashed since then, by their trashed_at.
    if query.updated_since is not None:
        names.append("updated_since")
        params["updated_since"] = query.updated_since
    completed = query.completed_filter
    if completed is not None:
        names.append("completed")
        params["completed"] = completed
    if query.priority:
        names.append("priority")
        params["priorities"] = sorted({p.value for p in query.priority})
    if query.category:
        names.append("category")
        params["category"] = query.category
    if query.overdue is not None:
        names.append("overdue" if query.overdue else "not_overdue")
        params["now"] = now
    if query.due_after is not None:
        names.append("due_after")
        params["due_after"] = query.due_after
    if query.due_before is not None:
        names.append("due_before")
        params["due_before"] = query.due_before
    if query.search:
        names.append("search")
        params["pattern"] = f"%{_escape_like(query.search)}%"
    # A list of live tasks reads the live tasks' tag rows (and counts from them alone: `queries.total`).
    tag_filter = "live_tag" if names[:1] == ["live"] else "tag"
    for n, tag in enumerate(dict.fromkeys(query.tag)):
        names.append(f"{tag_filter}{n}")
        params[f"tag{n}"] = tag
    if query.untagged is not None:
        names.append("untagged" if query.untagged else "tagged")
    return tuple(names), params


def task_stats(conn: Connection, *, scope: OwnerScope, zone: ZoneInfo) -> TaskStats:
    """Counts over the live tasks: totals from task_counts, overdue and due-today from index ranges."""
    now = utcnow()
    today = now.astimezone(zone).date()
    start_of_today = datetime.combine(today, time(), tzinfo=zone).astimezone(UTC)
    start_of_tomorrow = datetime.combine(today + timedelta(days=1), time(), tzinfo=zone).astimezone(UTC)
    by_category_rows = scope.rows(conn, queries.STATS_BY_CATEGORY, {})
    due = scope.rows(conn, queries.STATS_DUE, {"now": now, "today": start_of_today, "tomorrow": start_of_tomorrow})
    overdue, due_today = tuple(due[0])
    total = completed = low = medium = high = 0
    by_category: dict[str, int] = {}
    for row in by_category_rows:
        category, *counts = tuple(row)
        n, done, n_low, n_medium, n_high = map(int, counts)
        total, completed = total + n, completed + done
        low, medium, high = low + n_low, medium + n_medium, high + n_high
        key = category or "uncategorized"
        by_category[key] = by_category.get(key, 0) + n
    return TaskStats(
        total=total,
        pending=total - completed,
        completed=completed,
        overdue=int(overdue),
        due_today=int(due_today),
        completion_rate=completed / total if total else 0.0,
        by_priority=PriorityCounts(low=low, medium=medium, high=high),
        by_category=dict(sorted(by_category.items())),
    )


def purge_trash(db: Database, *, older_than: datetime, batch_size: int = PURGE_BATCH_SIZE) -> int:
    """Delete, for every user, the tasks trashed before `older_than`; returns how many. Maintenance (the
    `purge-trash` command), not a request: one short transaction per batch."""
    purged = 0
    while True:
        with db.transaction() as conn:
            params = {"older_than": older_than, "batch_size": batch_size}
            deleted = conn.execute(queries.PURGE_TRASH, params).rowcount
        purged += deleted
        if deleted < batch_size:
            return purged
