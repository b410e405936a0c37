"""Task reads and writes, always scoped to one owner: another user's task is indistinguishable from none."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, time, timedelta
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import (
    ColumnElement,
    Connection,
    Delete,
    Row,
    Select,
    Update,
    and_,
    bindparam,
    case,
    delete,
    func,
    insert,
    literal,
    not_,
    null,
    or_,
    true,
    update,
)
from sqlalchemy import select as sa_select
from sqlalchemy.sql.expression import ColumnCollection
from sqlmodel import Session, col, select
from sqlmodel.sql.expression import SelectOfScalar

from todo_api.auth.deps import TASK_NOT_FOUND
from todo_api.auth.service import LIVE_SESSION, OwnerScope
from todo_api.db import UTCDateTime, table, utcnow
from todo_api.errors import AppError, NotFound, PreconditionFailed
from todo_api.headers import etag
from todo_api.tasks.models import (
    PRIORITY_RANK,
    BulkAction,
    PriorityCounts,
    SortField,
    Task,
    TaskCount,
    TaskCreate,
    TaskPublic,
    TaskQuery,
    TaskStats,
    TaskUpdate,
)

MAX_ID = 2**63 - 1
PURGE_BATCH_SIZE = 1000

# Core columns, not ORM attributes, in the statements of the reads: they build and compile several times faster.
_TASKS = table(Task)
_COUNTS = table(TaskCount)
_LIVE = _TASKS.c.trashed_at.is_(None)
_TRASHED = _TASKS.c.trashed_at.is_not(None)
# The reads return plain rows of these columns, in TaskPublic's field order (the router turns them into JSON).
PUBLIC_COLUMNS = tuple(_TASKS.c[name] for name in TaskPublic.model_fields)
_ANY_STATE = true()

IfMatch = frozenset[int] | None
"""The versions a conditional write accepts (from `If-Match`); None means any."""


def _of(owner_id: str) -> ColumnElement[bool]:
    """The condition every task statement starts from: only this owner's rows."""
    return _TASKS.c.user_id == owner_id


# The same, for the statements built once: the owner is the bind parameter `:user_id` (as in `LIVE_SESSION`).
_OWNED = _TASKS.c.user_id == bindparam("user_id")


def _owned_by(owner_id: str) -> SelectOfScalar[Task]:
    return select(Task).where(_of(owner_id))


def _update_owned(owner_id: str) -> Update:
    return update(Task).where(_of(owner_id))


def _delete_owned(owner_id: str) -> Delete:
    return delete(Task).where(_of(owner_id))


def _valid_id(task_id: int) -> bool:
    # An id no row can have (negative, beyond 64-bit) is just another missing task, never a database error.
    return 0 < task_id <= MAX_ID


def _find(session: Session, *, owner_id: str, task_id: int, state: ColumnElement[bool]) -> Task | None:
    if not _valid_id(task_id):
        return None
    return session.exec(_owned_by(owner_id).where(col(Task.id) == task_id, state)).first()


def _not_applied(session: Session, *, owner_id: str, task_id: int, state: ColumnElement[bool]) -> AppError:
    """Why a write matched nothing: the task is not there in that state (404, like any missing task), or
    `If-Match` named another version (412, with the current task so the client can merge)."""
    current = _find(session, owner_id=owner_id, task_id=task_id, state=state)
    if current is None:
        return NotFound(TASK_NOT_FOUND)
    return PreconditionFailed(TaskPublic.model_validate(current), headers={"ETag": etag(current.version)})


def _write(
    session: Session,
    *,
    owner_id: str,
    task_id: int,
    state: ColumnElement[bool],
    if_match: IfMatch,
    values: dict[str, Any],
    now: datetime,
) -> Task:
    """Change one task in a single `UPDATE ... WHERE id AND owner AND state [AND version IN (If-Match)]`, so
    the check and the write are atomic: of two writers sending the same `If-Match`, only one can match."""
    if not _valid_id(task_id):
        raise NotFound(TASK_NOT_FOUND)
    task: Task | None = None
    if if_match is None or if_match:
        statement = (
            _update_owned(owner_id)
            .where(col(Task.id) == task_id, state)
            .values(**values, version=col(Task.version) + 1, updated_at=now)
            .returning(Task)
        )
        if if_match is not None:
            statement = statement.where(col(Task.version).in_(if_match))
        task = session.exec(statement).scalars().first()
    if task is None:
        raise _not_applied(session, owner_id=owner_id, task_id=task_id, state=state)
    session.commit()
    return task


def _now_param(now: datetime) -> ColumnElement[datetime]:
    return literal(now, UTCDateTime())


def _completion(completed: bool, now: datetime) -> dict[str, Any]:
    """Set `completed`; `completed_at` changes only when the state does."""
    return {
        "completed": completed,
        "completed_at": case(
            (col(Task.completed) == completed, col(Task.completed_at)),
            else_=_now_param(now) if completed else null(),
        ),
    }


def _toggle(now: datetime) -> dict[str, Any]:
    return {
        "completed": not_(col(Task.completed)),
        "completed_at": case((col(Task.completed), null()), else_=_now_param(now)),
    }


# --- Listing ---

_SORT_COLUMNS: dict[str, Any] = {
    "created_at": _TASKS.c.created_at,
    "updated_at": _TASKS.c.updated_at,
    "due_date": _TASKS.c.due_date,
    "priority": PRIORITY_RANK,
    "title": func.lower(_TASKS.c.title),
    "completed_at": _TASKS.c.completed_at,
}
_NULLABLE_SORTS = {"due_date", "completed_at"}


def _ordering(sort_by: SortField, *, descending: bool, nulls_last: bool = True) -> list[ColumnElement[Any]]:
    """The sort key, then id in the same direction (so pages are stable). Nulls sort last in both directions;
    NULLS LAST (SQL standard, PostgreSQL and SQLite >= 3.30) lets PostgreSQL walk an index for it."""
    column = _SORT_COLUMNS[sort_by]
    key = column.desc() if descending else column.asc()
    if sort_by in _NULLABLE_SORTS:
        key = key.nulls_last() if nulls_last else key.nulls_first()
    return [key, _TASKS.c.id.desc() if descending else _TASKS.c.id.asc()]


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


# A list request's statements depend on the shape of its query (which filters, which sort, whether the caller's
# session is checked in them), not on its values: each shape is built once (`_page_statement`, `_total_statement`)
# with named bind parameters, and SQLAlchemy keeps its cache key with it. Building the page's statement anew and
# computing that key cost as much CPU as SQLAlchemy's whole execution of it.


def _bucket_filters(columns: ColumnCollection[str, Any]) -> dict[str, ColumnElement[bool]]:
    """The filters the per-user counts can answer as well as the tasks (`columns` of either table): completion,
    priority and category."""
    return {
        "completed": columns.completed == bindparam("completed"),
        "priority": columns.priority.in_(bindparam("priorities", expanding=True)),
        "category": func.lower(columns.category) == func.lower(bindparam("category")),
    }


_COUNT_FILTERS = _bucket_filters(_COUNTS.c)
_SEARCH_PATTERN = func.lower(bindparam("pattern"))
_FILTERS: dict[str, ColumnElement[bool]] = {
    "trashed": _TRASHED,
    "live": _LIVE,
    "updated_since": _TASKS.c.updated_at >= bindparam("updated_since"),
    **_bucket_filters(_TASKS.c),
    "overdue": and_(_TASKS.c.completed == False, _TASKS.c.due_date < bindparam("now")),  # noqa: E712
    "not_overdue": or_(
        _TASKS.c.completed == True,  # noqa: E712
        _TASKS.c.due_date.is_(None),
        _TASKS.c.due_date >= bindparam("now"),
    ),
    "due_after": _TASKS.c.due_date >= bindparam("due_after"),
    "due_before": _TASKS.c.due_date < bindparam("due_before"),
    # Case-insensitive as ILIKE is (PostgreSQL's lower() on both sides: any letter; SQLite's: ASCII), on the
    # lower-cased copies the database keeps: no row is lower-cased at search time. PostgreSQL serves it from their
    # trigram indexes.
    "search": or_(
        _TASKS.c.title_lower.like(_SEARCH_PATTERN, escape="\\"),
        _TASKS.c.description_lower.like(_SEARCH_PATTERN, escape="\\"),
    ),
}


def _filters(query: TaskQuery, now: datetime) -> tuple[tuple[str, ...], dict[str, Any]]:
    """The names of the `_FILTERS` that `query` asks for, and their bind parameters."""
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


def _counted(query: TaskQuery) -> bool:
    """Whether task_counts answers how many tasks match: only trash state, completion, priority, category."""
    return (
        query.updated_since is None
        and query.overdue is None
        and query.due_after is None
        and query.due_before is None
        and not query.search
    )


@lru_cache(maxsize=256)
def _total_statement(filters: tuple[str, ...], *, counted: bool) -> Select[Any]:
    if not counted:
        return sa_select(func.count()).where(_OWNED, *(_FILTERS[name] for name in filters))
    buckets = (_COUNT_FILTERS[name] for name in filters if name in _COUNT_FILTERS)
    return sa_select(func.coalesce(func.sum(_COUNTS.c.n), 0)).where(
        _COUNTS.c.user_id == bindparam("user_id"), _COUNTS.c.trashed == bindparam("trashed"), *buckets
    )


def _total(connection: Connection, *, query: TaskQuery, filters: tuple[str, ...], params: dict[str, Any]) -> int:
    statement = _total_statement(filters, counted=_counted(query))
    total: int = connection.execute(statement, {**params, "trashed": bool(query.trashed)}).scalar_one()
    return total


def list_tasks(connection: Connection, *, owner: OwnerScope, query: TaskQuery) -> tuple[Sequence[Row[Any]], int]:
    """One page of the owner's tasks matching `query` (rows of `PUBLIC_COLUMNS`), and how many match in all."""
    page, total = _list(connection, owner=owner, query=query)
    if not page:
        owner.prove(connection)  # the page may have come back empty because the caller's session is not live
    return page, total


def _list(connection: Connection, *, owner: OwnerScope, query: TaskQuery) -> tuple[Sequence[Row[Any]], int]:
    filters, params = _filters(query, utcnow())
    params.update(owner.params)
    shape = (filters, query.sort_by, query.sort_order == "desc", owner.session_id is not None)
    if query.offset == 0:
        # The first page, with one row more than asked: when every match fits on it (the usual todo list), that is
        # the total, and no count is needed.
        page = _page(connection, shape, params, offset=0, limit=query.limit + 1)
        if len(page) <= query.limit:
            return page, len(page)
        return page[: query.limit], _total(connection, query=query, filters=filters, params=params)
    total = _total(connection, query=query, filters=filters, params=params)
    if query.offset >= total:
        return [], total
    offset, limit = query.offset, min(query.limit, total - query.offset)
    if offset > total // 2:
        # A deep page is read from the other end (offset 90,000 of 100,000 walks 10,000 entries, not 90,000);
        # the outer query puts it back in the requested order.
        return _page(connection, shape, params, offset=total - offset - limit, limit=limit, from_end=True), total
    return _page(connection, shape, params, offset=offset, limit=limit), total


_PageShape = tuple[tuple[str, ...], SortField, bool, bool]
"""A page statement's shape: its filters, the sort field, descending, and whether it checks the caller's session."""


def _page(
    connection: Connection,
    shape: _PageShape,
    params: dict[str, Any],
    *,
    offset: int,
    limit: int,
    from_end: bool = False,
) -> Sequence[Row[Any]]:
    statement = _page_statement(*shape, from_end=from_end)
    return connection.execute(statement, {**params, "offset": offset, "limit": limit}).all()


@lru_cache(maxsize=512)
def _page_statement(
    filters: tuple[str, ...], sort_by: SortField, descending: bool, live_session: bool, *, from_end: bool
) -> Select[Any]:
    """The page's ids first (from an index alone when the filters allow), then only those rows, in order; with
    `from_end`, the ids are walked from the other end. The ids are the owner's already; scoping the outer query
    again only tempts SQLite into the wrong index. Plain rows, not ORM objects: loading 100 entities costs more
    than the query. With `live_session`, the statement also checks the caller's session (`OwnerScope`)."""
    order = _ordering(sort_by, descending=descending)
    inner_order = _ordering(sort_by, descending=not descending, nulls_last=False) if from_end else order
    page_ids = (
        _SELECT_IDS.where(_OWNED, *(_FILTERS[name] for name in filters))
        .order_by(*inner_order)
        .offset(bindparam("offset"))
        .limit(bindparam("limit"))
    )
    statement = _SELECT_PUBLIC.where(_TASKS.c.id.in_(page_ids)).order_by(*order)
    return statement.where(LIVE_SESSION) if live_session else statement


# Built once, refined per request (building a select of thirteen columns anew costs more than refining one).
_SELECT_IDS = sa_select(_TASKS.c.id)
_SELECT_PUBLIC = sa_select(*PUBLIC_COLUMNS)
_PUBLIC_FIELDS = tuple(TaskPublic.model_fields)


def public(row: Row[Any]) -> dict[str, Any]:
    """A row of `PUBLIC_COLUMNS` as TaskPublic's JSON object (for `to_json`). The rows were just read from our own
    tables, so they are not validated again (for a page of 100 that costs four times the query); a test holds this
    to TaskPublic's own serialization byte for byte."""
    task = dict(zip(_PUBLIC_FIELDS, row, strict=True))
    task["status"] = "completed" if task["completed"] else "pending"
    return task


# --- Single tasks ---

# The most frequent statement, built once (SQLAlchemy then keeps its cache key too), as is and with the caller's
# session check (`OwnerScope`); rows, not ORM objects (a one-row ORM load costs more than its query).
_GET_TASK = _SELECT_PUBLIC.where(_TASKS.c.id == bindparam("task_id"), _OWNED, _LIVE)
_GET_TASK_IN_LIVE_SESSION = _GET_TASK.where(LIVE_SESSION)


def get_task(connection: Connection, *, owner: OwnerScope, task_id: int) -> Row[Any]:
    row = None
    if _valid_id(task_id):
        statement = _GET_TASK if owner.session_id is None else _GET_TASK_IN_LIVE_SESSION
        row = connection.execute(statement, {**owner.params, "task_id": task_id}).first()
    if row is None:
        owner.prove(connection)  # not found, or the caller's session is not live
        raise NotFound(TASK_NOT_FOUND)
    return row


# A new task in one statement, which also proves the caller's session (`OwnerScope`): INSERT ... SELECT the values
# WHERE the session is live, RETURNING the public columns. Built once; the values are bind parameters named after
# their columns (`user_id` is the owner in both places); the database computes the generated columns.
_INSERTED = [column for column in _TASKS.c if column.name != "id" and column.computed is None]
_INSERTED_NAMES = {column.name for column in _INSERTED}
_INSERT_TASK = insert(_TASKS).returning(*PUBLIC_COLUMNS)
_INSERT_TASK_IN_LIVE_SESSION = (
    insert(_TASKS)
    .from_select(
        _INSERTED,
        sa_select(*(bindparam(column.name, type_=column.type) for column in _INSERTED)).where(LIVE_SESSION),
    )
    .returning(*PUBLIC_COLUMNS)
)


def create_task(connection: Connection, *, owner: OwnerScope, data: TaskCreate) -> Row[Any]:
    """A new task of the owner's, not committed. Nothing inserted can only mean the caller's session is not live."""
    now = utcnow()
    task = Task.model_validate(
        data,
        update={
            "user_id": owner.user_id,
            "priority": data.priority.value,
            "completed_at": now if data.completed else None,
            "created_at": now,
            "updated_at": now,
        },
    )
    values = task.model_dump(include=_INSERTED_NAMES)
    if owner.session_id is None:
        return connection.execute(_INSERT_TASK, values).one()
    row = connection.execute(_INSERT_TASK_IN_LIVE_SESSION, {**values, **owner.params}).first()
    if row is None:
        raise owner.refused()
    return row


def update_task(session: Session, *, owner_id: str, task_id: int, data: TaskUpdate, if_match: IfMatch) -> Task:
    now = utcnow()
    values = data.model_dump(exclude_unset=True)
    completed = values.pop("completed", None)
    if "priority" in values:
        values["priority"] = values["priority"].value
    if completed is not None:
        values.update(_completion(completed, now))
    return _write(session, owner_id=owner_id, task_id=task_id, state=_LIVE, if_match=if_match, values=values, now=now)


def set_completion(session: Session, *, owner_id: str, task_id: int, completed: bool | None, if_match: IfMatch) -> Task:
    """`completed=None` toggles."""
    now = utcnow()
    values = _toggle(now) if completed is None else _completion(completed, now)
    return _write(session, owner_id=owner_id, task_id=task_id, state=_LIVE, if_match=if_match, values=values, now=now)


def trash_task(session: Session, *, owner_id: str, task_id: int, if_match: IfMatch) -> Task:
    now = utcnow()
    values = {"trashed_at": now}
    return _write(session, owner_id=owner_id, task_id=task_id, state=_LIVE, if_match=if_match, values=values, now=now)


def restore_task(session: Session, *, owner_id: str, task_id: int, if_match: IfMatch) -> Task:
    values = {"trashed_at": None}
    return _write(
        session, owner_id=owner_id, task_id=task_id, state=_TRASHED, if_match=if_match, values=values, now=utcnow()
    )


def delete_task(session: Session, *, owner_id: str, task_id: int, permanent: bool, if_match: IfMatch) -> None:
    """Move the task to the trash, or (`permanent`) delete it for good, live or trashed."""
    if not permanent:
        trash_task(session, owner_id=owner_id, task_id=task_id, if_match=if_match)
        return
    if not _valid_id(task_id):
        raise NotFound(TASK_NOT_FOUND)
    deleted = 0
    if if_match is None or if_match:
        statement = _delete_owned(owner_id).where(col(Task.id) == task_id)
        if if_match is not None:
            statement = statement.where(col(Task.version).in_(if_match))
        deleted = session.exec(statement, execution_options={"synchronize_session": False}).rowcount
    if not deleted:
        raise _not_applied(session, owner_id=owner_id, task_id=task_id, state=_ANY_STATE)
    session.commit()


# --- Many tasks ---


def bulk_update(session: Session, *, owner_id: str, action: BulkAction, ids: Sequence[int], commit: bool = True) -> int:
    """Apply `action` to the owner's tasks among `ids` in one statement; returns how many actually changed.
    Ids that are not the owner's (or do not exist) match nothing. With `commit=False` the caller commits."""
    wanted = sorted({task_id for task_id in ids if _valid_id(task_id)})
    if not wanted:
        return 0
    now = utcnow()
    criteria: list[ColumnElement[bool]]
    values: dict[str, Any]
    if action is BulkAction.complete:
        criteria, values = [_LIVE, col(Task.completed) == False], {"completed": True, "completed_at": now}  # noqa: E712
    elif action is BulkAction.reopen:
        criteria, values = [_LIVE, col(Task.completed) == True], {"completed": False, "completed_at": None}  # noqa: E712
    elif action is BulkAction.delete:
        criteria, values = [_LIVE], {"trashed_at": now}
    else:
        criteria, values = [_TRASHED], {"trashed_at": None}
    statement = (
        _update_owned(owner_id)
        .where(col(Task.id).in_(wanted), *criteria)
        .values(**values, version=col(Task.version) + 1, updated_at=now)
    )
    changed = session.exec(statement, execution_options={"synchronize_session": False}).rowcount
    if commit:
        session.commit()
    return changed


def task_stats(session: Session, *, owner_id: str, zone: ZoneInfo) -> TaskStats:
    """Counts over the live tasks: totals from task_counts (a few rows per user), overdue and due-today from
    index ranges over the pending tasks by due date."""
    now = utcnow()
    today = now.astimezone(zone).date()
    start_of_today = datetime.combine(today, time(), tzinfo=zone).astimezone(UTC)
    start_of_tomorrow = datetime.combine(today + timedelta(days=1), time(), tzinfo=zone).astimezone(UTC)

    def total_if(condition: ColumnElement[bool]) -> ColumnElement[int]:
        return func.sum(case((condition, col(TaskCount.n)), else_=0))

    # Core select (six columns, plain rows): the ORM session's typed exec() stops at four.
    by_category_rows = (
        session.connection()
        .execute(
            sa_select(
                col(TaskCount.category),
                func.sum(col(TaskCount.n)),
                total_if(col(TaskCount.completed) == True),  # noqa: E712
                total_if(col(TaskCount.priority) == "low"),
                total_if(col(TaskCount.priority) == "medium"),
                total_if(col(TaskCount.priority) == "high"),
            )
            .where(col(TaskCount.user_id) == owner_id, col(TaskCount.trashed) == False)  # noqa: E712
            .group_by(col(TaskCount.category))
            .having(func.sum(col(TaskCount.n)) > 0)
            .order_by(col(TaskCount.category))
        )
        .all()
    )
    # Two counts of index ranges, in one statement: a CASE per row over one range took twice as long.
    due = col(Task.due_date)
    pending = (_of(owner_id), _LIVE, col(Task.completed) == False)  # noqa: E712
    overdue, due_today = session.exec(
        select(
            select(func.count()).where(*pending, due < now).scalar_subquery(),
            select(func.count()).where(*pending, due >= start_of_today, due < start_of_tomorrow).scalar_subquery(),
        )
    ).one()

    total = completed = low = medium = high = 0
    by_category: dict[str, int] = {}
    for category, *counts in by_category_rows:
        n, done, n_low, n_medium, n_high = (int(count) for count in counts)
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


def purge_trash(session: Session, *, older_than: datetime, batch_size: int = PURGE_BATCH_SIZE) -> int:
    """Delete, for every user, the tasks trashed before `older_than`; returns how many. Maintenance (the
    `purge-trash` command), not a request: batches keep each transaction short."""
    purged = 0
    while True:
        batch = (
            select(Task.id).where(_TRASHED, col(Task.trashed_at) < older_than).order_by(col(Task.id)).limit(batch_size)
        )
        deleted = session.exec(
            delete(Task).where(col(Task.id).in_(batch)), execution_options={"synchronize_session": False}
        ).rowcount
        session.commit()
        purged += deleted
        if deleted < batch_size:
            return purged
