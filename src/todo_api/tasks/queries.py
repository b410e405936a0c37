"""Every SQL statement over tasks, each built once per query shape with named bind parameters, and each scoped to
one owner (`:owner_id`) and run through `OwnerScope.rows` (`Scoped`: it also proves the caller's session).

Why built once: building a statement and walking its cache key cost SQLAlchemy as much CPU as executing it, so a
statement is a module constant, or comes from an `lru_cache` builder keyed by its shape (which filters, which sort,
which columns change). Core columns, not ORM attributes, and plain rows, not ORM objects: loading one task as an
entity costs more than its query. Rows carry `PUBLIC_COLUMNS`, in TaskPublic's field order (`responses.task_json`),
the JSON columns (tags, checklist, reminders) as their JSON text: parsed, they cost the app more than the rest of the
row.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Literal

from sqlalchemy import (
    JSON,
    ColumnElement,
    FromClause,
    FunctionElement,
    Integer,
    Text,
    and_,
    bindparam,
    case,
    cast,
    delete,
    exists,
    func,
    literal_column,
    or_,
)
from sqlalchemy import select as sa_select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ColumnCollection

from todo_api.auth.principal import Scoped, scoped, scoped_insert
from todo_api.db import UTCDateTime, standalone, table
from todo_api.tasks.models import MAX_TAGS, PRIORITY_RANK, BulkAction, SortField, Task, TaskCount, TaskPublic, TaskTag

# ruff: noqa: E712  (`completed == False`, as the partial indexes are written: PostgreSQL does not index IS FALSE)

TASKS = table(Task)
COUNTS = table(TaskCount)
TAGS = table(TaskTag)
LIVE = TASKS.c.trashed_at.is_(None)
TRASHED = TASKS.c.trashed_at.is_not(None)
OWNED = TASKS.c.user_id == bindparam("owner_id")
# A recurring task that began a series is its own series' first task: its series_id is stored NULL (the INSERT does
# not know the id yet) and read as its id (`responses.task_json`), or stored when its rule ends (`update_task`).
_SERIES_ID = case(
    (and_(TASKS.c.series_id.is_(None), TASKS.c.recurrence.is_not(None)), TASKS.c.id), else_=TASKS.c.series_id
)
PUBLIC_COLUMNS = tuple(
    cast(column, Text).label(name) if isinstance(column.type, JSON) else column
    for name, column in ((name, TASKS.c[name]) for name in TaskPublic.model_fields)
)
SERIES_COLUMNS = (TASKS.c.series_start, TASKS.c.occurrence)
"""Returned after the public columns by the statements that may complete a recurring task (`service._follow`)."""
State = Literal["live", "trashed", "any"]
_STATES: dict[State, tuple[ColumnElement[bool], ...]] = {"live": (LIVE,), "trashed": (TRASHED,), "any": ()}
_ONE = TASKS.c.id == bindparam("task_id")
_VERSION_MATCHES = TASKS.c.version.in_(bindparam("versions", expanding=True))
_SELECT_PUBLIC = sa_select(*PUBLIC_COLUMNS)


# --- A list page's rows ---
# A listed task's fields up to `trashed_at` are read as themselves and rendered by the app; the rest (tags, checklist,
# reminders, recurrence, recurrence_basis, time_zone, series_id, next_task_id) comes as one piece of JSON text the
# database writes (`responses.tasks_json` splices it in): the three JSON columns as stored, three short strings and two
# numbers. Cheap for the database, and eight fewer values a task for the app to convert and render. Rendering the whole
# task there (date-times with to_char) cost the database twice what it saved the app.


class json_text(FunctionElement[str]):  # noqa: N801 (an SQL function)
    """A value as a JSON string literal, as pydantic writes it (the same escapes): to_json on PostgreSQL, json_quote
    on SQLite (which writes NULL as null)."""

    type = Text()
    inherit_cache = True


@compiles(json_text, "postgresql")
def _json_text_postgresql(element: json_text, compiler: SQLCompiler, **kw: Any) -> str:
    return f"to_json({compiler.process(element.clauses, **kw)})::text"


@compiles(json_text, "sqlite")
def _json_text_sqlite(element: json_text, compiler: SQLCompiler, **kw: Any) -> str:
    return f"json_quote({compiler.process(element.clauses, **kw)})"


_FIELDS = tuple(TaskPublic.model_fields)
_REST_FROM = _FIELDS.index("tags")


def _listed_rest() -> ColumnElement[str]:
    rest: ColumnElement[str] | None = None
    for name in _FIELDS[_REST_FROM:]:
        column: ColumnElement[Any] = _SERIES_ID if name == "series_id" else TASKS.c[name]
        if isinstance(column.type, JSON | Integer):
            value: ColumnElement[str] = cast(column, Text)
        else:
            value = json_text(column)
        if name == "series_id" or TASKS.c[name].nullable:
            value = func.coalesce(value, literal_column("'null'", Text))
        key = literal_column(f"'{',' if rest is not None else ''}\"{name}\":'", Text)
        rest = key + value if rest is None else rest + key + value
    assert rest is not None
    return rest.label("rest")


LISTED_COLUMNS = (*PUBLIC_COLUMNS[:_REST_FROM], _listed_rest())
"""A list page's columns: TaskPublic's up to `trashed_at`, then `rest` (`"tags":[...],...,"next_task_id":null`)."""
_NOW = bindparam("now", type_=UTCDateTime())

# --- One task ---

_FIND: dict[State, Scoped] = {
    state: scoped(_SELECT_PUBLIC.where(_ONE, OWNED, *conditions)) for state, conditions in _STATES.items()
}


def find_task(state: State) -> Scoped:
    """The task `:task_id` of the owner's, in that state."""
    return _FIND[state]


LOCK_TASK = scoped(_SELECT_PUBLIC.where(_ONE, OWNED, LIVE).with_for_update(of=TASKS))
"""The live task `:task_id`, locked until the transaction ends: a change computed from it (its reminders against
a new due date) cannot interleave with another."""


# A new task: INSERT ... SELECT of its values (checked: only while the caller's session is live). The values are bind
# parameters named after their columns (the owner's is `:owner_id`); the database computes the generated columns.
INSERTED_COLUMNS = tuple(column for column in TASKS.c if column.name != "id" and column.computed is None)
_INSERT_TASK = scoped_insert(
    TASKS,
    sa_select(
        *(
            bindparam("owner_id" if column.name == "user_id" else column.name, type_=column.type).label(column.name)
            for column in INSERTED_COLUMNS
        )
    ),
    returning=PUBLIC_COLUMNS,
)
INSERT_TASK = Scoped(standalone(_INSERT_TASK.plain), standalone(_INSERT_TASK.checked))
"""A whole transaction by itself: a keyless create is one round trip (`db.standalone`)."""

# What a change may set, as `new_<column>` parameters (a parameter may not share its column's name in a SET clause).
CHANGEABLE = (
    "title",
    "description",
    "priority",
    "category",
    "due_date",
    "trashed_at",
    "tags",
    "checklist",
    "reminders",
    "recurrence",
    "recurrence_basis",
    "time_zone",
)
_COMPLETION: dict[str, dict[str, Any]] = {
    # Set `completed`; `completed_at` changes only when the state does.
    "completed": {
        "completed": bindparam("new_completed"),
        "completed_at": case(
            (TASKS.c.completed == bindparam("new_completed"), TASKS.c.completed_at),
            else_=bindparam("new_completed_at", type_=UTCDateTime()),
        ),
    },
    "toggle": {
        "completed": ~TASKS.c.completed,
        "completed_at": case((TASKS.c.completed, None), else_=_NOW),
    },
}
Completion = Literal["completed", "toggle"] | None


@lru_cache(maxsize=256)
def update_task(state: State, changes: tuple[str, ...], completion: Completion, *, conditional: bool) -> Scoped:
    """`UPDATE` of task `:task_id` in `state`: the `changes` (of `CHANGEABLE`), the completion, version + 1 and
    `updated_at = :now`, RETURNING the public columns. `conditional`: only at one of `:versions` (`If-Match`), in the
    same statement, so of two writers sending the same `If-Match` only one can match."""
    values: dict[str, Any] = {name: bindparam(f"new_{name}", type_=TASKS.c[name].type) for name in changes}
    if completion is not None:
        values.update(_COMPLETION[completion])
    if "recurrence" in changes:
        # A rule set anew starts a series here: anchored at the due date, counted from this task; the task stays
        # in its series (a first task keeps its id as series_id even when the rule ends).
        due = values["due_date"] if "due_date" in changes else TASKS.c.due_date
        values.update(series_id=_SERIES_ID, series_start=due, occurrence=1)
    conditions = [_ONE, OWNED, *_STATES[state]]
    if conditional:
        conditions.append(_VERSION_MATCHES)
    statement = (
        TASKS.update()
        .where(*conditions)
        .values(**values, version=TASKS.c.version + 1, updated_at=_NOW)
        .returning(*PUBLIC_COLUMNS, *SERIES_COLUMNS)
    )
    return scoped(statement)


@lru_cache(maxsize=2)
def delete_task(*, conditional: bool) -> Scoped:
    """Delete task `:task_id` for good, live or trashed (`conditional`: only at one of `:versions`)."""
    conditions = [_ONE, OWNED, _VERSION_MATCHES] if conditional else [_ONE, OWNED]
    return scoped(delete(TASKS).where(*conditions).returning(TASKS.c.id))


_IDS = TASKS.c.id.in_(bindparam("ids", expanding=True))


def _bulk(criteria: tuple[ColumnElement[bool], ...], values: dict[str, Any]) -> Scoped:
    return scoped(
        TASKS.update()
        .where(OWNED, _IDS, *criteria)
        .values(**values, version=TASKS.c.version + 1, updated_at=_NOW)
        .returning(*PUBLIC_COLUMNS, *SERIES_COLUMNS)
    )


BULK: dict[BulkAction, Scoped] = {  # the tag actions are per task (`TAGS_OF`, `SET_TAGS`)
    BulkAction.complete: _bulk((LIVE, TASKS.c.completed == False), {"completed": True, "completed_at": _NOW}),
    BulkAction.reopen: _bulk((LIVE, TASKS.c.completed == True), {"completed": False, "completed_at": None}),
    BulkAction.delete: _bulk((LIVE,), {"trashed_at": _NOW}),
    BulkAction.restore: _bulk((TRASHED,), {"trashed_at": None}),
}
"""Apply an action to the owner's tasks among `:ids` that it changes, RETURNING them (a completed recurring task is
followed by its next one)."""

# --- Tags ---
# task_tags is tasks.tags as rows (name, lower(name), and `live`: the task's trashed_at IS NULL), kept exact by
# triggers on tasks: read, never written here.


_OWN_TAGS = TAGS.c.user_id == bindparam("owner_id")
_LIVE_TAGS = TAGS.c.live == True
"""The rows of live tasks (`ix_task_tags_live_user_id_name_lower`, partial on it)."""


def _tag_rows(tags: FromClause, parameter: str, *, live: bool) -> tuple[ColumnElement[bool], ...]:
    """The owner's rows of `tags` (task_tags or an alias) for tag `:parameter` (ignoring case), of live tasks only
    with `live`."""
    named = (tags.c.user_id == bindparam("owner_id"), tags.c.name_lower == func.lower(bindparam(parameter)))
    return (*named, tags.c.live == True) if live else named


def _has_tag(parameter: str, *, live: bool = False) -> ColumnElement[bool]:
    """The task has tag `:parameter`; with `live`, read among the live tasks' rows (the task must be live)."""
    return exists().where(TAGS.c.task_id == TASKS.c.id, *_tag_rows(TAGS, parameter, live=live))


TAGS_OF_LIVE: Scoped = scoped(
    sa_select(TASKS.c.id, TASKS.c.tags).where(OWNED, LIVE, _IDS).order_by(TASKS.c.id).with_for_update()
)
"""The tags of the owner's live tasks among `:ids`, locked (PostgreSQL) until the transaction ends."""
TAGGED: Scoped = scoped(
    sa_select(TASKS.c.id, TASKS.c.tags, LIVE.label("live"))
    .where(OWNED, _has_tag("tag"))
    .order_by(TASKS.c.id)
    .with_for_update()
)
"""The owner's tasks (live and trashed) with tag `:tag` (ignoring case), their tags and whether they are live,
locked until the transaction ends."""
SET_TAGS: Scoped = scoped(
    TASKS.update()
    .where(OWNED, _ONE)
    .values(tags=bindparam("new_tags", type_=TASKS.c.tags.type), version=TASKS.c.version + 1, updated_at=_NOW)
    .returning(TASKS.c.id)
)
LIST_TAGS: Scoped = scoped(
    sa_select(func.min(TAGS.c.name), func.count())
    .where(_OWN_TAGS, _LIVE_TAGS)
    .group_by(TAGS.c.name_lower)
    .order_by(TAGS.c.name_lower)
)
"""Each tag of the owner's live tasks (a spelling of it) and how many have it, by name: the live rows of task_tags
alone, from their index."""

LINK_NEXT: Scoped = scoped(
    TASKS.update().where(OWNED, _ONE).values(next_task_id=bindparam("follower_id")).returning(*PUBLIC_COLUMNS)
)
"""A completed recurring task gets its follower's id (the completion already counted as its change: no version)."""


# --- Lists ---

_SORT_COLUMNS: dict[str, Any] = {
    "created_at": TASKS.c.created_at,
    "updated_at": TASKS.c.updated_at,
    "due_date": TASKS.c.due_date,
    "priority": PRIORITY_RANK,
    "title": func.lower(TASKS.c.title),
    "completed_at": TASKS.c.completed_at,
}
_NULLABLE_SORTS = {"due_date", "completed_at"}


def _ordering(sort_by: SortField, *, descending: bool, nulls_last: bool = True) -> list[ColumnElement[Any]]:
    """The sort key, then id in the same direction (so pages are stable). Nulls sort last in both directions;
    NULLS LAST (SQL standard, PostgreSQL and SQLite >= 3.30) lets PostgreSQL walk an index for it."""
    column = _SORT_COLUMNS[sort_by]
    key = column.desc() if descending else column.asc()
    if sort_by in _NULLABLE_SORTS:
        key = key.nulls_last() if nulls_last else key.nulls_first()
    return [key, TASKS.c.id.desc() if descending else TASKS.c.id.asc()]


def _bucket_filters(columns: ColumnCollection[str, Any]) -> dict[str, ColumnElement[bool]]:
    """The filters the per-user counts can answer as well as the tasks (`columns` of either table): completion,
    priority and category."""
    return {
        "completed": columns.completed == bindparam("completed"),
        "priority": columns.priority.in_(bindparam("priorities", expanding=True)),
        "category": func.lower(columns.category) == func.lower(bindparam("category")),
    }


_COUNT_FILTERS = _bucket_filters(COUNTS.c)
_NO_TAGS: ColumnElement[Any] = literal_column("'[]'")
_SEARCH_PATTERN = func.lower(bindparam("pattern"))
FILTERS: dict[str, ColumnElement[bool]] = {
    "trashed": TRASHED,
    "live": LIVE,
    "updated_since": TASKS.c.updated_at >= bindparam("updated_since"),
    **_bucket_filters(TASKS.c),
    "overdue": and_(TASKS.c.completed == False, TASKS.c.due_date < bindparam("now")),
    "not_overdue": or_(TASKS.c.completed == True, TASKS.c.due_date.is_(None), TASKS.c.due_date >= bindparam("now")),
    "due_after": TASKS.c.due_date >= bindparam("due_after"),
    "due_before": TASKS.c.due_date < bindparam("due_before"),
    # Tag `:tagN`, ignoring case: among all of the owner's rows (a list of trashed tasks, or a sync), or among the
    # live tasks' rows (a list of live tasks: `live_tagN`), which also counts from task_tags alone (`total`).
    **{f"tag{n}": _has_tag(f"tag{n}") for n in range(MAX_TAGS)},
    **{f"live_tag{n}": _has_tag(f"tag{n}", live=True) for n in range(MAX_TAGS)},
    # No tags: the array itself (`ix_tasks_live_untagged_user_id_created_at` is partial on this very term), which
    # has no element exactly when the task has no task_tags rows (the API stores no JSON null in it).
    "untagged": TASKS.c.tags == _NO_TAGS,
    "tagged": TASKS.c.tags != _NO_TAGS,
    # Case-insensitive as ILIKE is (PostgreSQL's lower() on both sides: any letter; SQLite's: ASCII), on the
    # lower-cased copies the database keeps: no row is lower-cased at search time. PostgreSQL serves it from their
    # trigram indexes.
    "search": or_(
        TASKS.c.title_lower.like(_SEARCH_PATTERN, escape="\\"),
        TASKS.c.description_lower.like(_SEARCH_PATTERN, escape="\\"),
    ),
}
"""The list filters by name; a list request's shape is the tuple of the names it uses."""
COUNTED_FILTERS = frozenset({"trashed", "live", *_COUNT_FILTERS})
"""Filters that task_counts can answer (a total over a few rows instead of counting the matching tasks)."""
LIVE_TAG_FILTERS = {f"live_tag{n}": f"tag{n}" for n in range(MAX_TAGS)}
"""The live tag filters and their parameters: `live` and these alone are counted from task_tags alone."""


def _live_tagged(parameters: list[str]) -> tuple[FromClause, list[ColumnElement[bool]]]:
    """The owner's live tasks with every tag of `parameters`: the first tag's live rows (of `first`, returned) whose
    task is among each other tag's, from the partial index alone; one row per task (one per task and tag)."""
    first, *others = (TAGS.alias(f"tags{n}") for n in range(len(parameters)))
    conditions = list(_tag_rows(first, parameters[0], live=True))
    for other, parameter in zip(others, parameters[1:], strict=True):
        conditions.append(
            first.c.task_id.in_(sa_select(other.c.task_id).where(*_tag_rows(other, parameter, live=True)))
        )
    return first, conditions


def _live_tag_total(parameters: list[str]) -> Scoped:
    """How many of the owner's live tasks have every tag of `parameters` (exact: one row per task)."""
    first, conditions = _live_tagged(parameters)
    return scoped(sa_select(func.count()).select_from(first).where(*conditions).group_by(first.c.user_id))


def _among_tagged(count: int) -> ColumnElement[bool]:
    """The task is among the owner's live tasks with tags `:tag0` .. `:tag<count - 1>`, as one set: `IS true` keeps
    PostgreSQL from turning the IN into a join, so it reads the set once into a hash table (a hashed SubPlan) and
    probes it while walking the sort's index, instead of an index probe of task_tags per task walked."""
    first, conditions = _live_tagged([f"tag{n}" for n in range(count)])
    return TASKS.c.id.in_(sa_select(first.c.task_id).where(*conditions)).is_(True)


FEW_TAGGED = 5_000
"""At most this many matches, a live tag list's page reads the tagged tasks as one set (`few_tagged`): walking the
sort's index probing task_tags for a rare tag visits ~100 tasks per match on the page (tag=legal, 1 % of 100,000
tasks: ~25 ms), the set costs a hash table of the matches (~1.5 ms). For common tags the walk is the cheaper one."""
FILTERS.update({f"tagged_set{count}": _among_tagged(count) for count in range(1, MAX_TAGS + 1)})


def counted_from_tags(filters: tuple[str, ...]) -> bool:
    """Whether `total(filters)` counts from task_tags alone: live tasks with tags, nothing else."""
    return filters[:1] == ("live",) and len(filters) > 1 and all(name in LIVE_TAG_FILTERS for name in filters[1:])


def few_tagged(filters: tuple[str, ...]) -> tuple[str, ...]:
    """The same list as `filters` (which `counted_from_tags`), its tags read as one set (see `FEW_TAGGED`)."""
    return ("live", f"tagged_set{len(filters) - 1}")


@lru_cache(maxsize=512)
def page(filters: tuple[str, ...], sort_by: SortField, descending: bool, *, from_end: bool) -> Scoped:
    """A page (`:offset`, `:limit`) of the owner's tasks matching `filters`: the page's ids first (from an index
    alone when the filters allow), then only those rows, in order; with `from_end`, the ids are walked from the
    other end (a deep page) and put back in order. The ids are the owner's already; scoping the outer query again
    only tempts SQLite into the wrong index. Rows of `LISTED_COLUMNS`."""
    order = _ordering(sort_by, descending=descending)
    inner_order = _ordering(sort_by, descending=not descending, nulls_last=False) if from_end else order
    page_ids = (
        sa_select(TASKS.c.id)
        .where(OWNED, *(FILTERS[name] for name in filters))
        .order_by(*inner_order)
        .offset(bindparam("offset"))
        .limit(bindparam("limit"))
    )
    return scoped(sa_select(*LISTED_COLUMNS).where(TASKS.c.id.in_(page_ids)).order_by(*order))


@lru_cache(maxsize=256)
def total(filters: tuple[str, ...]) -> Scoped:
    """How many of the owner's tasks match `filters`; no row when none do (so that `OwnerScope.rows` proves the
    caller then). From task_counts when it can answer (`:trashed` names its bucket); from task_tags alone for live
    tasks with tags."""
    if counted_from_tags(filters):
        return _live_tag_total([LIVE_TAG_FILTERS[name] for name in filters[1:]])
    if COUNTED_FILTERS.issuperset(filters):
        buckets = (_COUNT_FILTERS[name] for name in filters if name in _COUNT_FILTERS)
        return scoped(
            sa_select(func.sum(COUNTS.c.n))
            .where(COUNTS.c.user_id == bindparam("owner_id"), COUNTS.c.trashed == bindparam("trashed"), *buckets)
            .group_by(COUNTS.c.user_id)
        )
    return scoped(sa_select(func.count()).where(OWNED, *(FILTERS[name] for name in filters)).group_by(TASKS.c.user_id))


# --- Statistics ---


def _total_if(condition: ColumnElement[bool]) -> ColumnElement[int]:
    return func.sum(case((condition, COUNTS.c.n), else_=0))


STATS_BY_CATEGORY: Scoped = scoped(
    sa_select(
        COUNTS.c.category,
        func.sum(COUNTS.c.n),
        _total_if(COUNTS.c.completed == True),
        _total_if(COUNTS.c.priority == "low"),
        _total_if(COUNTS.c.priority == "medium"),
        _total_if(COUNTS.c.priority == "high"),
    )
    .where(COUNTS.c.user_id == bindparam("owner_id"), COUNTS.c.trashed == False)
    .group_by(COUNTS.c.category)
    .having(func.sum(COUNTS.c.n) > 0)
    .order_by(COUNTS.c.category)
)
"""The live tasks per category: total, completed, low, medium, high (task_counts: a few rows per user)."""

_PENDING = (OWNED, LIVE, TASKS.c.completed == False)
STATS_DUE: Scoped = scoped(
    sa_select(
        sa_select(func.count()).where(*_PENDING, TASKS.c.due_date < bindparam("now")).scalar_subquery(),
        sa_select(func.count())
        .where(*_PENDING, TASKS.c.due_date >= bindparam("today"), TASKS.c.due_date < bindparam("tomorrow"))
        .scalar_subquery(),
    )
)
"""Pending tasks overdue, and due in [`:today`, `:tomorrow`): two index ranges in one statement (a CASE per row over
one range took twice as long)."""

# --- Maintenance (every user's rows: not a request's) ---

PURGE_TRASH = delete(TASKS).where(
    TASKS.c.id.in_(
        sa_select(TASKS.c.id)
        .where(TRASHED, TASKS.c.trashed_at < bindparam("older_than", type_=UTCDateTime()))
        .order_by(TASKS.c.id)
        .limit(bindparam("batch_size"))
    )
)
"""Delete up to `:batch_size` tasks trashed before `:older_than`, of any user (`todo-api purge-trash`)."""
