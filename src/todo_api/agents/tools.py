"""The tools an AI agent calls through the MCP server, with the names, parameters and results of the todo-app
specification's MCP server, and our API's richer options.

Each tool is a task route in another dress: open a block, prove the caller (`caller(ctx, user_id).scope(conn)`),
make one service call, return one answer. Input goes through the REST API's own models, so a bad value gets the
same message as its 422; every failure becomes a tool error with a clear message (`answers`), never a trace.
The user is always the one the bearer token proves: a `user_id` argument may name the caller (its id or `me`),
and any other value is answered as a missing task.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Annotated, Any, Literal, ParamSpec, TypeVar
from zoneinfo import ZoneInfo

from fastapi import Request
from mcp.server.mcpserver import Context, MCPServer
from mcp.types import CallToolResult, TextContent, ToolAnnotations
from pydantic import BaseModel, Field, ValidationError
from sqlalchemy import Row
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from todo_api import __version__
from todo_api.auth.deps import Caller, Owner
from todo_api.db import Database
from todo_api.errors import AppError, NotFound, ServiceUnavailable, UnprocessableEntity, is_database_unavailable
from todo_api.responses import task_objects
from todo_api.tasks import service
from todo_api.tasks.models import (
    MAX_TAGS,
    TaskCreate,
    TaskQuery,
    TaskUpdate,
    TimeZoneName,
)

logger = logging.getLogger(__name__)

INSTRUCTIONS = (
    "Manage the signed-in user's todo tasks. Tasks have a title, an optional description, a priority (low, medium, "
    "high), an optional category, due date (ISO 8601, UTC unless an offset is given), tags and a recurrence rule "
    "(RFC 5545 RRULE such as FREQ=WEEKLY;BYDAY=MO). Use list_tasks to find a task's id before changing it. "
    "Deleted tasks go to the trash and can be restored in the app."
)
MAX_LIST = 200
NOTHING_TO_UPDATE = "Nothing to update: give at least one of title, description, priority, category, due_date, tags"

P = ParamSpec("P")
M = TypeVar("M", bound=BaseModel)


def _arg(description: str, **schema: Any) -> Any:
    """A parameter's description and JSON-schema hints (limits, formats) for the model that calls the tool; the
    values are checked by the API's own models (`TaskCreate`, ...), which word the errors as the REST 422 does."""
    return Field(description=description, json_schema_extra=schema or None)


UserId = Annotated[
    str | None,
    _arg("Optional. The signed-in user's id or `me`; the user is always the one the bearer token proves."),
]
TaskId = Annotated[int, _arg("The task's id (from list_tasks or add_task)")]
Title = Annotated[str, _arg("The task's title", minLength=1, maxLength=200)]
Description = Annotated[str | None, _arg("Longer notes", maxLength=1000)]
Priority = Annotated[Literal["low", "medium", "high"] | None, _arg("How important the task is")]
Category = Annotated[str | None, _arg("A free-form category such as work or home", maxLength=50)]
DueDate = Annotated[
    str | None,
    _arg(
        "When the task is due: an ISO 8601 date-time (2026-12-24T09:00:00Z; UTC unless it has an offset)",
        format="date-time",
    ),
]
Tags = Annotated[
    list[str] | None,
    _arg(
        f"Tag names (0-{MAX_TAGS}, each 1-40 characters); replaces the task's tags. Matched ignoring case",
        maxItems=MAX_TAGS,
    ),
]
Recurrence = Annotated[
    str | None,
    _arg(
        "Makes the task repeat: an RFC 5545 RRULE (FREQ=DAILY, WEEKLY, MONTHLY or YEARLY, with INTERVAL, BYDAY, "
        "BYMONTHDAY, BYMONTH, BYSETPOS, COUNT, UNTIL); needs a due_date. Completing it creates the next occurrence",
        examples=["FREQ=WEEKLY;BYDAY=MO,WE", "FREQ=MONTHLY;BYMONTHDAY=1"],
    ),
]
TimeZone = Annotated[
    str | None, _arg("The IANA time zone the rule repeats in (default UTC)", examples=["Europe/Berlin"])
]


# --- How a tool reaches the API's services ---


def caller(ctx: Context, user_id: str | None) -> tuple[Database, Owner]:
    """The database and the caller (proven by `router._admit` for this request; the tool's block proves it again,
    as every REST route does) addressing `user_id` (None: `me`)."""
    request = ctx.request_context.request
    if not isinstance(request, Request):  # only ever served over HTTP (`router.mcp`)
        raise RuntimeError("an MCP tool called outside an HTTP request")
    agent: Caller = request.state.agent
    return request.app.state.database, Owner(caller=agent, path_user_id="me" if user_id is None else user_id)


def _valid(model: type[M], **values: Any) -> M:
    """The arguments given (None: absent) as `model`, checked as the REST API checks its bodies."""
    return model.model_validate({name: value for name, value in values.items() if value is not None})


def _failure(message: str) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=message)], is_error=True)


def _validation_message(error: ValidationError) -> str:
    """The 422's field messages, one per wrong field: `tags: List should have at most 20 items ...`."""
    parts = []
    for item in error.errors(include_url=False, include_input=False):
        field = ".".join(str(part) for part in item["loc"])
        parts.append(f"{field}: {item['msg']}" if field else item["msg"])
    return "; ".join(parts)


def answers(tool: Callable[P, Any]) -> Callable[P, Any]:
    """Every failure of `tool` as a tool error with a clear message: a task that is not the caller's is missing
    (`Task 42 not found`, word for word), a bad argument says which and why; the database down is "retry later".
    Anything else is a bug: the SDK answers `Error executing tool <name>` and logs the traceback."""

    @functools.wraps(tool)
    def run(*args: P.args, **kwargs: P.kwargs) -> Any:
        try:
            return tool(*args, **kwargs)
        except NotFound:
            task_id = kwargs.get("task_id")
            return _failure("Task not found" if task_id is None else f"Task {task_id} not found")
        except ValidationError as exc:
            return _failure(_validation_message(exc))
        except AppError as exc:
            return _failure(exc.detail)
        except (DBAPIError, PoolTimeoutError) as exc:
            if not is_database_unavailable(exc):
                raise
            cause = exc.orig if isinstance(exc, DBAPIError) else exc
            logger.error("database unavailable: MCP tool %s: %s", tool.__name__, type(cause).__name__)
            return _failure(ServiceUnavailable.detail)

    return run


def _done(row: Row[Any], status: str) -> dict[str, Any]:
    return {"task_id": row.id, "status": status, "title": row.title}


# --- The tools ---


@answers
def add_task(
    ctx: Context,
    title: Title,
    description: Description = None,
    priority: Priority = None,
    category: Category = None,
    due_date: DueDate = None,
    tags: Tags = None,
    recurrence: Recurrence = None,
    time_zone: TimeZone = None,
    user_id: UserId = None,
) -> dict[str, Any]:
    """Create a task for the signed-in user. Returns {"task_id", "status": "created", "title"}."""
    data = _valid(
        TaskCreate,
        title=title,
        description=description,
        priority=priority,
        category=category,
        due_date=due_date,
        tags=tags,
        recurrence=recurrence,
        time_zone=time_zone,
    )
    db, owner = caller(ctx, user_id)
    with db.transaction() as conn:
        row = service.create_task(conn, scope=owner.scope(conn), data=data)
    return _done(row, "created")


Status = Annotated[Literal["all", "pending", "completed"], _arg("Which tasks: all (default), pending or completed")]
Search = Annotated[str | None, _arg("Words in the title or description (ignoring case)", maxLength=1000)]
Tag = Annotated[str | None, _arg("Only tasks with this tag (ignoring case)", maxLength=40)]
DueBefore = Annotated[str | None, _arg("Due before this ISO 8601 date-time or date", format="date-time")]
DueAfter = Annotated[str | None, _arg("Due at or after this ISO 8601 date-time or date", format="date-time")]
SortBy = Annotated[
    Literal["created_at", "updated_at", "due_date", "priority", "title", "completed_at"], _arg("The field to sort by")
]
SortOrder = Annotated[Literal["asc", "desc"], _arg("desc (default): newest, highest, latest first")]
Limit = Annotated[int, _arg(f"At most this many tasks (1-{MAX_LIST}, default 50)", minimum=1, maximum=MAX_LIST)]


@answers
def list_tasks(
    ctx: Context,
    status: Status = "all",
    search: Search = None,
    tag: Tag = None,
    priority: Priority = None,
    due_before: DueBefore = None,
    due_after: DueAfter = None,
    sort: SortBy = "created_at",
    sort_order: SortOrder = "desc",
    limit: Limit = 50,
    user_id: UserId = None,
) -> list[dict[str, Any]]:
    """List the signed-in user's tasks (not those in the trash), newest first unless sorted otherwise. Returns
    [{"id", "title", "completed", "priority", "due_date", "tags"}, ...]."""
    if not 1 <= limit <= MAX_LIST:
        raise UnprocessableEntity(f"limit: must be between 1 and {MAX_LIST}")
    query = _valid(
        TaskQuery,
        status=status,
        search=search,
        tag=[tag] if tag is not None else None,
        priority=[priority] if priority is not None else None,
        due_before=due_before,
        due_after=due_after,
        sort_by=sort,
        sort_order=sort_order,
        limit=limit,
    )
    db, owner = caller(ctx, user_id)
    with db.read() as conn:
        page, _total = service.list_tasks(conn, scope=owner.scope(conn), query=query)
    return [{name: task[name] for name in LISTED} for task in task_objects(page)]


LISTED = ("id", "title", "completed", "priority", "due_date", "tags")
"""A listed task's fields (the specification's), as the REST API renders them."""


@answers
def complete_task(ctx: Context, task_id: TaskId, user_id: UserId = None) -> dict[str, Any]:
    """Mark a task completed. Completing a recurring task creates its next occurrence, returned as next_task_id.
    Returns {"task_id", "status": "completed", "title"[, "next_task_id"]}."""
    db, owner = caller(ctx, user_id)
    with db.transaction() as conn:
        row = service.set_completion(conn, scope=owner.scope(conn), task_id=task_id, completed=True, if_match=None)
    done = _done(row, "completed")
    return done if row.next_task_id is None else {**done, "next_task_id": row.next_task_id}


@answers
def reopen_task(ctx: Context, task_id: TaskId, user_id: UserId = None) -> dict[str, Any]:
    """Mark a completed task pending again. Returns {"task_id", "status": "pending", "title"}."""
    db, owner = caller(ctx, user_id)
    with db.transaction() as conn:
        row = service.set_completion(conn, scope=owner.scope(conn), task_id=task_id, completed=False, if_match=None)
    return _done(row, "pending")


@answers
def update_task(
    ctx: Context,
    task_id: TaskId,
    title: Annotated[str | None, _arg("A new title", minLength=1, maxLength=200)] = None,
    description: Description = None,
    priority: Priority = None,
    category: Category = None,
    due_date: DueDate = None,
    tags: Tags = None,
    user_id: UserId = None,
) -> dict[str, Any]:
    """Change a task's fields; the ones not given stay as they are. Returns {"task_id", "status": "updated",
    "title"}."""
    data = _valid(
        TaskUpdate,
        title=title,
        description=description,
        priority=priority,
        category=category,
        due_date=due_date,
        tags=tags,
    )
    if not data.model_fields_set:
        raise UnprocessableEntity(NOTHING_TO_UPDATE)
    db, owner = caller(ctx, user_id)
    with db.transaction() as conn:
        row = service.update_task(conn, scope=owner.scope(conn), task_id=task_id, data=data, if_match=None)
    return _done(row, "updated")


@answers
def delete_task(ctx: Context, task_id: TaskId, user_id: UserId = None) -> dict[str, Any]:
    """Move a task to the trash (the user can restore it in the app). Returns {"task_id", "status": "deleted",
    "title"}."""
    db, owner = caller(ctx, user_id)
    with db.transaction() as conn:
        row = service.trash_task(conn, scope=owner.scope(conn), task_id=task_id, if_match=None)
    return _done(row, "deleted")


class _StatsQuery(BaseModel):
    time_zone: TimeZoneName = "UTC"


@answers
def task_stats(
    ctx: Context,
    time_zone: Annotated[str | None, _arg("The IANA time zone that decides what today is (default UTC)")] = None,
    user_id: UserId = None,
) -> dict[str, Any]:
    """The signed-in user's task counts: total, pending, completed, overdue, due today, by priority and category
    (as GET /api/{user_id}/stats)."""
    zone = _valid(_StatsQuery, time_zone=time_zone).time_zone
    db, owner = caller(ctx, user_id)
    with db.read() as conn:
        stats = service.task_stats(conn, scope=owner.scope(conn), zone=ZoneInfo(zone))
    return stats.model_dump(mode="json")


_READ_ONLY = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False)
_WRITES = ToolAnnotations(read_only_hint=False, destructive_hint=False, open_world_hint=False)
TOOLS: dict[str, tuple[Callable[..., Any], ToolAnnotations]] = {
    "add_task": (add_task, _WRITES),
    "list_tasks": (list_tasks, _READ_ONLY),
    "complete_task": (complete_task, _WRITES),
    "reopen_task": (reopen_task, _WRITES),
    "update_task": (update_task, _WRITES),
    "delete_task": (delete_task, ToolAnnotations(read_only_hint=False, destructive_hint=True, open_world_hint=False)),
    "task_stats": (task_stats, _READ_ONLY),
}


def build_server(log_level: Literal["DEBUG", "WARNING"]) -> MCPServer:
    """The MCP server with every tool (`router.serving` runs it)."""
    server = MCPServer("todo-api", version=__version__, instructions=INSTRUCTIONS, log_level=log_level)
    for name, (tool, hints) in TOOLS.items():
        server.add_tool(tool, name=name, annotations=hints)
    return server
