"""Task reads and writes, always within one owner's `OwnerScope`: another user's task is indistinguishable from none.

Every function takes the route's connection and runs the statements of `tasks.queries` through `scope.rows`; none
commits (the route's block does). Reads return rows of `queries.PUBLIC_COLUMNS`, rendered by `responses`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Row

from todo_api.auth.principal import OwnerScope
from todo_api.db import Database, utcnow
from todo_api.errors import NotFound, PreconditionFailed, Unauthorized
from todo_api.responses import task_headers, task_json
from todo_api.tasks import queries
from todo_api.tasks.models import BulkAction, PriorityCounts, TaskCreate, TaskQuery, TaskStats, TaskUpdate

TASK_NOT_FOUND = "Task not found"
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
    values.update(priority=data.priority.value, completed_at=now if data.completed else None, version=1)
    values.update(created_at=now, updated_at=now, trashed_at=None)
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


def delete_task(conn: Connection, *, scope: OwnerScope, task_id: int, permanent: bool, if_match: IfMatch) -> None:
    """Move the task to the trash, or (`permanent`) delete it for good, live or trashed."""
    if not permanent:
        now = utcnow()
        _change(conn, scope, task_id, "live", ("trashed_at",), None, {"new_trashed_at": now}, if_match, now)
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
    row = scope.first(conn, statement, params)
    if row is None:
        raise _not_applied(conn, scope, task_id, state)
    return row


def _not_applied(conn: Connection, scope: OwnerScope, task_id: int, state: queries.State) -> Exception:
    """Why a write matched nothing: the task is not there in that state (404, like any missing task), or `If-Match`
    named another version (412, with the current task so the client can merge)."""
    current = scope.first(conn, queries.find_task(state), {"task_id": _id(task_id)})
    if current is None:
        return NotFound(TASK_NOT_FOUND)
    return PreconditionFailed(task_json(current), headers=task_headers(current.version))


# --- Many tasks ---


def bulk_update(conn: Connection, *, scope: OwnerScope, action: BulkAction, ids: Sequence[int]) -> int:
    """Apply `action` to the owner's tasks among `ids` in one statement; returns how many actually changed. Ids
    that are not the owner's (or do not exist) match nothing."""
    wanted = sorted({task_id for task_id in ids if _id(task_id)})
    return len(scope.rows(conn, queries.BULK[action], {"ids": wanted, "now": utcnow()}))


def list_tasks(conn: Connection, *, scope: OwnerScope, query: TaskQuery) -> tuple[Sequence[Row[Any]], int]:
    """One page of the owner's tasks matching `query`, and how many match in all."""
    filters, params = _filters(query, utcnow())
    shape = (filters, query.sort_by, query.sort_order == "desc")
    if query.offset == 0:
        # The first page, with one row more than asked: when every match fits on it (the usual todo list), that is
        # the total, and no count is needed.
        page = scope.rows(conn, queries.page(*shape, from_end=False), {**params, "offset": 0, "limit": query.limit + 1})
        if len(page) <= query.limit:
            return page, len(page)
        return page[: query.limit], _total(conn, scope, filters, params)
    total = _total(conn, scope, filters, params)
    if query.offset >= total:
        return [], total
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
