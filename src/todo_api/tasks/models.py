"""The tasks table and its request/response schemas."""

from __future__ import annotations

import re
import unicodedata
from datetime import UTC, date, datetime, time
from enum import StrEnum
from functools import lru_cache
from typing import Annotated, Any, Literal, get_args
from zoneinfo import ZoneInfo, available_timezones

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    SerializerFunctionWrapHandler,
    StringConstraints,
    ValidationInfo,
    computed_field,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic import Field as PydanticField
from pydantic import Field as QueryField
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    ColumnClause,
    Computed,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    literal_column,
    text,
)
from sqlalchemy.dialects import postgresql
from sqlmodel import Field, SQLModel

from todo_api.db import UTCDateTime, as_utc, table, utcnow
from todo_api.fields import NoNul, NotNull, strip_lower
from todo_api.tasks.recurrence import MAX_RRULE_LENGTH, RecurrenceBasis, normalize_rrule, validate_series


class Priority(StrEnum):
    low = "low"
    medium = "medium"
    high = "high"


def _blank_to_none(value: object) -> object:
    return None if isinstance(value, str) and not value.strip() else value


Title = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200), NoNul]
Description = Annotated[str, StringConstraints(max_length=1000), NoNul]
Category = Annotated[str, StringConstraints(strip_whitespace=True, max_length=50), NoNul]
DueDate = Annotated[datetime, AfterValidator(as_utc)]
"""Naive datetimes are taken as UTC; everything is stored and returned in UTC."""


@lru_cache(maxsize=1)
def _zone_names() -> frozenset[str]:
    return frozenset(available_timezones() | {"UTC"})


def _known_zone(name: str) -> str:
    # Checked against the IANA list rather than handed to ZoneInfo, which would also try odd file paths.
    if name not in _zone_names() or name == "localtime":  # "localtime": whatever this machine's clock says
        raise ValueError("unknown time zone; use an IANA name such as Europe/Berlin or UTC")
    return name


def _blank_is_utc(value: object) -> object:
    return "UTC" if isinstance(value, str) and not value.strip() else value


TimeZoneName = Annotated[
    str, BeforeValidator(_blank_is_utc), StringConstraints(strip_whitespace=True), AfterValidator(_known_zone)
]
"""An IANA time zone name (`Europe/Berlin`, `UTC`)."""

MAX_TAGS = 20
MAX_CHECKLIST_ITEMS = 50


def _no_control_characters(value: str) -> str:
    if any(unicodedata.category(character) == "Cc" for character in value):
        raise ValueError("must not contain control characters")
    return value


TagName = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=40), AfterValidator(_no_control_characters)
]
"""A tag: 1-40 characters after trimming, no control characters; matched ignoring case."""


def tag_set(tags: list[str]) -> list[str]:
    """A task's tags: `Work` and `work` are one tag, the first spelling stays; sorted ignoring case, as returned."""
    spellings: dict[str, str] = {}
    for tag in tags:
        spellings.setdefault(tag.lower(), tag)
    return sorted(spellings.values(), key=lambda tag: (tag.lower(), tag))


Tags = Annotated[list[TagName], QueryField(max_length=MAX_TAGS), AfterValidator(tag_set)]


class ChecklistItem(BaseModel):
    # `done` first: PostgreSQL's jsonb keeps an object's keys shortest first, so rows render in this order as they
    # are (`responses.task_json`), with no per-item rebuild.
    done: bool = False
    title: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200), NoNul]


Checklist = Annotated[list[ChecklistItem], QueryField(max_length=MAX_CHECKLIST_ITEMS)]
MAX_REMINDERS = 5
MAX_MINUTES_BEFORE_DUE = 40320  # four weeks


class ReminderIn(BaseModel):
    """A reminder as a client sends it: `{"at": <date-time>}` or `{"before_due": <minutes>}`. What a task returns
    (`id`, `fire_at`, `fired_at`) may be sent back as it is: those fields are ignored."""

    at: DueDate | None = None
    before_due: int | None = PydanticField(default=None, ge=0, le=MAX_MINUTES_BEFORE_DUE)

    @model_validator(mode="after")
    def _one_kind(self) -> ReminderIn:
        if (self.at is None) == (self.before_due is None):
            raise ValueError('a reminder is either {"at": <date-time>} or {"before_due": <minutes>}')
        return self


Reminders = Annotated[list[ReminderIn], QueryField(max_length=MAX_REMINDERS)]
Recurrence = Annotated[str, StringConstraints(max_length=MAX_RRULE_LENGTH), AfterValidator(normalize_rrule)]
"""An RFC 5545 RRULE value (`FREQ=WEEKLY;BYDAY=MO,WE`, a leading `RRULE:` accepted), stored normalised."""

_TASK_EXAMPLE: dict[str, Any] = {
    "title": "Water the plants",
    "priority": "medium",
    "due_date": "2026-12-07T09:00:00Z",
    "tags": ["home", "garden"],
    "checklist": [{"title": "Balcony", "done": False}, {"title": "Kitchen", "done": False}],
    "recurrence": "FREQ=WEEKLY;BYDAY=MO,TH",
    "recurrence_basis": "due",
    "time_zone": "Europe/Berlin",
}


def check_series(recurrence: str | None, due_date: datetime | None, time_zone: str) -> None:
    if recurrence is None:
        return
    if due_date is None:
        raise ValueError("a recurring task needs a due_date")
    validate_series(recurrence, time_zone=time_zone, due=due_date)


REMINDER_NEEDS_DUE_DATE = "a reminder with before_due needs a due_date"


def check_reminders(reminders: list[ReminderIn], due_date: datetime | None) -> None:
    if due_date is None and any(reminder.before_due is not None for reminder in reminders):
        raise ValueError(REMINDER_NEEDS_DUE_DATE)


class TaskCreate(SQLModel):
    model_config = {"json_schema_extra": {"examples": [_TASK_EXAMPLE]}}

    title: Title
    description: Description | None = None
    completed: bool = False
    priority: Priority = Priority.medium
    category: Annotated[Category | None, BeforeValidator(_blank_to_none)] = None
    due_date: DueDate | None = None
    tags: Tags = []
    checklist: Checklist = []
    reminders: Reminders = []
    recurrence: Recurrence | None = None
    recurrence_basis: RecurrenceBasis = "due"
    time_zone: TimeZoneName = "UTC"

    @model_validator(mode="after")
    def _series(self) -> TaskCreate:
        check_series(self.recurrence, self.due_date, self.time_zone)
        check_reminders(self.reminders, self.due_date)
        return self


class TaskUpdate(SQLModel):
    """Every field optional (PUT and PATCH alike); absent fields stay as they are. `recurrence: null` ends a series."""

    model_config = {"json_schema_extra": {"examples": [{"tags": ["home"], "recurrence": None}]}}

    title: Annotated[Title | None, NotNull] = None
    description: Description | None = None
    completed: Annotated[bool | None, NotNull] = None
    priority: Annotated[Priority | None, NotNull] = None
    category: Annotated[Category | None, BeforeValidator(_blank_to_none)] = None
    due_date: DueDate | None = None
    tags: Annotated[Tags | None, NotNull] = None
    checklist: Annotated[Checklist | None, NotNull] = None
    reminders: Annotated[Reminders | None, NotNull] = None
    recurrence: Recurrence | None = None
    recurrence_basis: Annotated[RecurrenceBasis | None, NotNull] = None
    time_zone: Annotated[TimeZoneName | None, NotNull] = None

    @model_validator(mode="after")
    def _series(self) -> TaskUpdate:
        if self.recurrence is not None and "due_date" in self.model_fields_set:
            check_series(self.recurrence, self.due_date, self.time_zone or "UTC")
        if self.reminders is not None and "due_date" in self.model_fields_set:
            check_reminders(self.reminders, self.due_date)
        return self


class TaskCompletion(SQLModel):
    """`{}` (or no body) toggles; `{"completed": true|false}` sets."""

    completed: bool | None = None


# The partial indexes' predicates, as literal DDL (the queries' own conditions are in tasks/queries.py).
_LIVE_ROWS = text("trashed_at IS NULL")
_TRASHED_ROWS = text("trashed_at IS NOT NULL")
PRIORITY_RANK: ColumnClause[int] = literal_column(
    "CASE priority WHEN 'high' THEN 3 WHEN 'medium' THEN 2 ELSE 1 END", Integer()
)
"""high > medium > low, as literal SQL so the expression index on it matches the queries on every backend."""


def _trigram_index(column: str) -> Index:
    """A pg_trgm index serving `LIKE '%term%'` on `column`, on PostgreSQL (SQLite scans)."""
    return Index(
        f"ix_tasks_{column}_trgm", column, postgresql_using="gin", postgresql_ops={column: "gin_trgm_ops"}
    ).ddl_if(dialect="postgresql")


_ID_TYPE = BigInteger().with_variant(Integer, "sqlite")
"""A task id: BIGINT, and INTEGER on SQLite (where only INTEGER PRIMARY KEY is the rowid)."""


def _json_array_column() -> Column[Any]:
    """A JSON array, never NULL, '[]' by default: jsonb on PostgreSQL (psycopg2 returns the list), JSON text on SQLite
    (SQLAlchemy's JSON type decodes it)."""
    return Column(JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False, server_default="[]")


class Task(SQLModel, table=True):
    __tablename__ = "tasks"
    # Kept in step with the migrations (src/todo_api/migrations/versions). Most indexes are partial over the live tasks
    # (trashed_at IS NULL): every list and count of live tasks then reads the index alone.
    __table_args__ = (
        CheckConstraint("priority IN ('low', 'medium', 'high')", name="priority"),
        # On SQLite the migration declares these two on their columns (it cannot add a table constraint).
        CheckConstraint("recurrence_basis IN ('due', 'completion')", name="recurrence_basis"),
        CheckConstraint("recurrence IS NULL OR due_date IS NOT NULL", name="recurrence_needs_due_date"),
        Index(
            "ix_tasks_live_user_id_created_at",
            "user_id",
            "created_at",
            "id",
            postgresql_where=_LIVE_ROWS,
            sqlite_where=_LIVE_ROWS,
        ),
        # Sync (`updated_since`, which includes the trash), sort by updated_at, and every lookup by user_id.
        Index("ix_tasks_user_id_updated_at", "user_id", "updated_at", "id"),
        # Due date, soonest first and undated last (on SQLite also latest first: NULLs sort lowest there).
        Index(
            "ix_tasks_live_user_id_due_date",
            "user_id",
            "due_date",
            "id",
            postgresql_where=_LIVE_ROWS,
            sqlite_where=_LIVE_ROWS,
        ),
        # PostgreSQL sorts NULLs highest, so latest first with undated tasks last needs its own order.
        Index(
            "ix_tasks_live_user_id_due_date_desc",
            "user_id",
            text("due_date DESC NULLS LAST"),
            text("id DESC"),
            postgresql_where=_LIVE_ROWS,
        ).ddl_if(dialect="postgresql"),
        # Completed date, earliest first and open tasks last (on SQLite also latest first), and latest first on
        # PostgreSQL, as for the due date.
        Index(
            "ix_tasks_live_user_id_completed_at",
            "user_id",
            "completed_at",
            "id",
            postgresql_where=_LIVE_ROWS,
            sqlite_where=_LIVE_ROWS,
        ),
        Index(
            "ix_tasks_live_user_id_completed_at_desc",
            "user_id",
            text("completed_at DESC NULLS LAST"),
            text("id DESC"),
            postgresql_where=_LIVE_ROWS,
        ).ddl_if(dialect="postgresql"),
        Index(
            "ix_tasks_live_user_id_priority_rank",
            "user_id",
            PRIORITY_RANK,
            "id",
            postgresql_where=_LIVE_ROWS,
            sqlite_where=_LIVE_ROWS,
        ),
        # Sort by title, ignoring case (either direction).
        Index(
            "ix_tasks_live_user_id_title",
            "user_id",
            text("lower(title)"),
            "id",
            postgresql_where=_LIVE_ROWS,
            sqlite_where=_LIVE_ROWS,
        ),
        # Pending tasks by due date: overdue, due today.
        Index(
            "ix_tasks_live_user_id_completed_due_date",
            "user_id",
            "completed",
            "due_date",
            postgresql_where=_LIVE_ROWS,
            sqlite_where=_LIVE_ROWS,
        ),
        # The category filter (case-insensitive), with status and priority; also gives the planner statistics
        # on lower(category).
        Index(
            "ix_tasks_live_user_id_category",
            "user_id",
            text("lower(category)"),
            "completed",
            "priority",
            postgresql_where=_LIVE_ROWS,
            sqlite_where=_LIVE_ROWS,
        ),
        # The trash listing and purge-trash: only trashed rows.
        Index(
            "ix_tasks_trashed_user_id",
            "user_id",
            "trashed_at",
            postgresql_where=_TRASHED_ROWS,
            sqlite_where=_TRASHED_ROWS,
        ),
        # `search`: title and description in lower case, computed by the database (stored; the migration makes
        # them computed on read on SQLite, which cannot add a stored column to a table), so that
        # `lower_column LIKE lower('%term%')` matches exactly what ILIKE would without lower-casing every candidate
        # row again. Not mapped (`__mapper_args__`): no read or write of a task carries them.
        Column("title_lower", Text, Computed("lower(title)", persisted=True)),
        Column("description_lower", Text, Computed("lower(description)", persisted=True)),
        _trigram_index("title_lower"),
        _trigram_index("description_lower"),
        {"sqlite_autoincrement": True},
    )
    __mapper_args__ = {"exclude_properties": ["title_lower", "description_lower"]}

    id: int | None = Field(
        default=None,
        sa_column=Column(_ID_TYPE, primary_key=True, autoincrement=True),
    )
    user_id: str = Field(sa_column=Column(String(255), ForeignKey("users.id", ondelete="CASCADE"), nullable=False))
    title: str = Field(max_length=200)
    description: str | None = Field(default=None, max_length=1000)
    completed: bool = False
    priority: str = Field(default=Priority.medium.value, max_length=10)
    category: str | None = Field(default=None, max_length=50)
    due_date: datetime | None = Field(default=None, sa_type=UTCDateTime)
    completed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    # +1 on every change (trash and restore included); the strong ETag of the task.
    version: int = Field(default=1, sa_column=Column(Integer, nullable=False, server_default="1"))
    # Set when the task is moved to the trash; NULL for live tasks.
    trashed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    # Tag names as the API stores them (one spelling per name, sorted ignoring case); `task_tags` indexes them.
    tags: list[Any] = Field(default_factory=list, sa_column=_json_array_column())
    # [{"title": str, "done": bool}, ...]
    checklist: list[Any] = Field(default_factory=list, sa_column=_json_array_column())
    # [{"at" | "before_due", "id", "fire_at", "fired_at"}, ...] (`tasks.reminders`); `reminder_jobs` arms them.
    reminders: list[Any] = Field(default_factory=list, sa_column=_json_array_column())
    # Recurring tasks: an RFC 5545 RRULE value (NULL: a one-off task), counted from the due date or the completion.
    recurrence: str | None = Field(default=None, max_length=500)
    recurrence_basis: str = Field(default="due", sa_column=Column(String(10), nullable=False, server_default="due"))
    time_zone: str = Field(default="UTC", sa_column=Column(String(64), nullable=False, server_default="UTC"))
    # The series' first task (no foreign key: it may be deleted later), its first due date (the rule's anchor), this
    # task's position in it, and the task created when this one was completed.
    series_id: int | None = Field(default=None, sa_column=Column(_ID_TYPE, nullable=True))
    series_start: datetime | None = Field(default=None, sa_type=UTCDateTime)
    occurrence: int = Field(default=1, sa_column=Column(Integer, nullable=False, server_default="1"))
    next_task_id: int | None = Field(default=None, sa_column=Column(_ID_TYPE, nullable=True))


class TaskCount(SQLModel, table=True):
    """How many of a user's tasks are in each (category, priority, completed, trashed) bucket; `category`
    is '' for none. Kept exact by triggers on `tasks` (see the 0002 migration), never written by the
    application: totals and statistics read a few of these rows instead of counting 100,000 tasks."""

    __tablename__ = "task_counts"

    user_id: str = Field(sa_column=Column(String(255), ForeignKey("users.id", ondelete="CASCADE"), primary_key=True))
    category: str = Field(primary_key=True, max_length=50)
    priority: str = Field(primary_key=True, max_length=10)
    completed: bool = Field(primary_key=True)
    trashed: bool = Field(primary_key=True)
    n: int


class TaskTag(SQLModel, table=True):
    """One row per (task, tag): the tag as stored and lower-cased, so that filtering by a tag and listing a user's
    tags read an index. Derived from `tasks.tags` by triggers on `tasks` (see the 0007 migration), never written by
    the application; a deleted task's rows go by the cascade. `name_lower` is lower() of the database: every letter
    on PostgreSQL, ASCII letters only on SQLite."""

    __tablename__ = "task_tags"
    __table_args__ = (
        # A user's tasks with a tag, live or trashed (renaming or deleting a tag).
        Index("ix_task_tags_user_id_name_lower", "user_id", "name_lower", "task_id"),
        # A user's live tasks with a tag and their count (from the index alone), and the tag list.
        Index(
            "ix_task_tags_live_user_id_name_lower",
            "user_id",
            "name_lower",
            "task_id",
            postgresql_where=text("live"),  # PostgreSQL reads the queries' `live = true` as `live`
            sqlite_where=text("live = 1"),  # SQLite needs the queries' very term
        ),
    )

    task_id: int = Field(
        sa_column=Column(_ID_TYPE, ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True, autoincrement=False)
    )
    user_id: str = Field(sa_column=Column(String(255), ForeignKey("users.id", ondelete="CASCADE"), nullable=False))
    name: str = Field(max_length=40)
    name_lower: str = Field(primary_key=True, max_length=80)
    # The task's `trashed_at IS NULL`, kept by the triggers (on trash and restore too): a live tag filter, its count
    # and the tag list read task_tags alone.
    live: bool = Field(sa_column=Column(Boolean, nullable=False))


# `untagged`: a user's live tasks without tags (`tags = '[]'`, the same jsonb on PostgreSQL and the same text on
# SQLite), newest first, and their count, from this index alone (migration 0007).
_LIVE_UNTAGGED = text("trashed_at IS NULL AND tags = '[]'")
_TASKS = table(Task)
Index(
    "ix_tasks_live_untagged_user_id_created_at",
    _TASKS.c.user_id,
    _TASKS.c.created_at,
    _TASKS.c.id,
    postgresql_where=_LIVE_UNTAGGED,
    sqlite_where=_LIVE_UNTAGGED,
)


TaskStatus = Literal["pending", "completed"]


def task_status(completed: bool) -> TaskStatus:
    """A task's `status`, derived from `completed` (the seeds' frontends read either)."""
    return "completed" if completed else "pending"


class ReminderPublic(BaseModel):
    """A task's reminder: `at` (absolute) or `before_due` (minutes before the due date), never both."""

    model_config = {
        "json_schema_extra": {
            "examples": [{"id": 1, "before_due": 30, "fire_at": "2026-12-07T08:30:00Z", "fired_at": None}]
        }
    }

    id: int = PydanticField(description="Unique within the task; kept while the reminder stays")
    at: datetime | None = PydanticField(default=None, description="Absent for a relative reminder")
    before_due: int | None = PydanticField(default=None, description="Absent for an absolute reminder")
    fire_at: datetime = PydanticField(description="When it fires (UTC)")
    fired_at: datetime | None = PydanticField(description="When it was delivered; null until then")

    @model_serializer(mode="wrap")
    def _only_its_kind(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        return {key: value for key, value in data.items() if key not in ("at", "before_due") or value is not None}


class TaskPublic(SQLModel):
    id: int
    user_id: str
    title: str
    description: str | None
    completed: bool
    priority: Priority
    category: str | None
    due_date: datetime | None
    completed_at: datetime | None
    created_at: datetime
    updated_at: datetime
    version: int
    trashed_at: datetime | None
    tags: list[str]
    checklist: list[ChecklistItem]
    reminders: list[ReminderPublic]
    recurrence: str | None
    recurrence_basis: RecurrenceBasis
    time_zone: str
    series_id: int | None = PydanticField(description="The id of the series' first task (a recurring task)")
    next_task_id: int | None = PydanticField(description="The series' next task, created when this one was completed")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def status(self) -> TaskStatus:
        return task_status(self.completed)


# --- Listing, statistics and bulk requests ---

MAX_PAGE_SIZE = 500
DEFAULT_PAGE_SIZE = 100
MAX_OFFSET = 2**31 - 1
MAX_BULK_IDS = 500


_DATE_ONLY = re.compile(r"\d{4}-\d{2}-\d{2}")
# An unencoded "+" in a query string arrives as a space: "2026-05-01T09:00:00 02:00".
_SPACE_FOR_PLUS = re.compile(r"(T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?) (\d{2}(?::?\d{2})?)$")


def parse_moment(value: str, zone: ZoneInfo) -> datetime:
    """An ISO-8601 date-time (naive = UTC) or a date (the start of that day in `zone`), as aware UTC."""
    text = _SPACE_FOR_PLUS.sub(r"\1+\2", value.strip())
    try:
        if _DATE_ONLY.fullmatch(text):
            moment = datetime.combine(date.fromisoformat(text), time(), tzinfo=zone)
        else:
            moment = datetime.fromisoformat(text)
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
        return moment.astimezone(UTC)
    except (ValueError, OverflowError):
        raise ValueError("must be an ISO-8601 date-time or a date (YYYY-MM-DD)") from None


SortField = Literal["created_at", "updated_at", "due_date", "priority", "title", "completed_at"]
_SORT_FIELDS = {name.replace("_", ""): name for name in get_args(SortField)}


def _sort_field(value: object) -> object:
    # created_at, createdAt (the seeds' spelling) and CreatedAt all name the same field.
    if isinstance(value, str):
        return _SORT_FIELDS.get(value.replace("_", "").lower(), value)
    return value


def _split_priorities(value: object) -> object:
    # `priority=low,high` and `priority=low&priority=high` alike.
    if isinstance(value, str):
        value = [value]
    if isinstance(value, list):
        return [item.strip().lower() for part in value for item in str(part).split(",") if item.strip()]
    return value


class TaskQuery(BaseModel):
    """`GET /api/{user_id}/tasks` query parameters. An empty value is the same as leaving one out."""

    tz: TimeZoneName = QueryField(default="UTC", description="IANA time zone of date-only values")
    status: Annotated[Literal["pending", "completed", "all"] | None, BeforeValidator(strip_lower)] = None
    completed: bool | None = QueryField(default=None, description="Same as status=completed / pending")
    priority: Annotated[list[Priority], BeforeValidator(_split_priorities)] = QueryField(
        default=[], description="Any of these; comma-separated or repeated"
    )
    category: Category | None = QueryField(default=None, description="Exact match, ignoring case")
    overdue: bool | None = QueryField(default=None, description="true: pending and due before now")
    due_after: datetime | None = QueryField(
        default=None, description="Due at or after: ISO-8601 date-time, or a date (start of that day in tz)"
    )
    due_before: datetime | None = QueryField(default=None, description="Due before (same forms as due_after)")
    updated_since: datetime | None = QueryField(
        default=None, description="Changed at or after this moment, tasks trashed since then included (sync)"
    )
    search: Annotated[str, StringConstraints(max_length=1000), NoNul] | None = QueryField(
        default=None, description="Case-insensitive substring of title or description, taken literally"
    )
    trashed: bool | None = QueryField(default=None, description="true: list the trash instead")
    tag: list[TagName] = QueryField(
        default=[], max_length=MAX_TAGS, description="Tasks that have every one of these tags (ignoring case)"
    )
    untagged: bool | None = QueryField(default=None, description="true: tasks without a tag; false: with one")
    sort_by: Annotated[SortField, BeforeValidator(_sort_field)] = QueryField(
        default="created_at", description="Also in camelCase (dueDate); empty values sort last"
    )
    sort_order: Annotated[Literal["asc", "desc"], BeforeValidator(strip_lower)] = "desc"
    limit: int = QueryField(default=DEFAULT_PAGE_SIZE, ge=1, le=MAX_PAGE_SIZE)
    offset: int = QueryField(default=0, ge=0, le=MAX_OFFSET)

    @model_validator(mode="before")
    @classmethod
    def _empty_is_absent(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {key: value for key, value in data.items() if value not in ("", [], [""])}
        return data

    @field_validator("due_after", "due_before", "updated_since", mode="before")
    @classmethod
    def _moment(cls, value: object, info: ValidationInfo) -> object:
        if not isinstance(value, str):
            return value
        return parse_moment(value, ZoneInfo(info.data.get("tz", "UTC")))

    @model_validator(mode="after")
    def _consistent(self) -> TaskQuery:
        if self.status in ("pending", "completed") and self.completed is not None:
            if (self.status == "completed") != self.completed:
                completed = str(self.completed).lower()
                raise ValueError(f"status={self.status} contradicts completed={completed}; send one of them")
        if self.overdue and self.completed_filter is True:
            raise ValueError("overdue=true matches pending tasks only; it contradicts a completed filter")
        if self.due_after is not None and self.due_before is not None and self.due_after >= self.due_before:
            raise ValueError("due_after must be earlier than due_before")
        if self.untagged and self.tag:
            raise ValueError("untagged=true contradicts a tag filter; send one of them")
        return self

    @property
    def completed_filter(self) -> bool | None:
        """True or False when the caller filters on completion (by `status` or `completed`), else None."""
        if self.status in ("pending", "completed"):
            return self.status == "completed"
        return self.completed


class PriorityCounts(BaseModel):
    low: int
    medium: int
    high: int


class TaskStats(BaseModel):
    total: int
    pending: int
    completed: int
    overdue: int
    due_today: int
    completion_rate: float
    by_priority: PriorityCounts
    by_category: dict[str, int]


class BulkAction(StrEnum):
    complete = "complete"
    reopen = "reopen"
    delete = "delete"
    restore = "restore"
    tag = "tag"
    untag = "untag"


_TAG_ACTIONS = (BulkAction.tag, BulkAction.untag)


class TaskBulk(SQLModel):
    """`delete` moves the tasks to the trash; `tag` and `untag` add or remove `tag` (live tasks only); ids that are
    not the caller's are ignored like missing ones."""

    action: BulkAction
    ids: list[int] = Field(min_length=1, max_length=MAX_BULK_IDS)
    tag: TagName | None = None

    @model_validator(mode="after")
    def _tag_for_tag_actions(self) -> TaskBulk:
        if (self.action in _TAG_ACTIONS) != (self.tag is not None):
            raise ValueError("`tag` is required by the tag and untag actions, and only by them")
        return self


class TagPublic(BaseModel):
    name: str
    count: int = PydanticField(description="Live tasks that have it")


class TagRename(BaseModel):
    name: TagName


class BulkResult(SQLModel):
    updated: int
