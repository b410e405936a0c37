"""Routes under /api/{user_id}/tasks and /api/{user_id}/stats. Each reads the same way: open `db.read()` or
`db.transaction()`, prove the caller with `owner.scope(conn)`, make one service call, return one JSON response. The
HTTP details (ETag, If-Match, If-None-Match, paging headers, Idempotency-Key) are handled here."""

from __future__ import annotations

from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Body, Depends, Header, Path, Query, Request, Response, status

from todo_api.auth.deps import PathOwner
from todo_api.db import DatabaseDep
from todo_api.errors import error_responses
from todo_api.headers import if_match_versions, not_modified, page_headers
from todo_api.idempotency import IdempotencyKey, run_once
from todo_api.responses import json_response, task_headers, task_response, tasks_json
from todo_api.tasks import service
from todo_api.tasks.models import (
    BulkResult,
    TagPublic,
    TagRename,
    TaskBulk,
    TaskCompletion,
    TaskCreate,
    TaskPublic,
    TaskQuery,
    TaskStats,
    TaskUpdate,
    TimeZoneName,
)

router = APIRouter(prefix="/api/{user_id}", tags=["tasks"], responses=error_responses(400, 401, 404, 413, 422, 503))

_CURRENT_TASK: dict[int | str, dict[str, Any]] = {
    status.HTTP_412_PRECONDITION_FAILED: {
        "model": TaskPublic,
        "description": "`If-Match` is stale: the body is the current task, its `ETag` the current version",
    }
}


async def _if_match(
    if_match: Annotated[
        list[str] | None,
        Header(description='Apply only if the task is still at this version: `"<version>"` (its ETag) or `*`'),
    ] = None,
) -> service.IfMatch:
    return if_match_versions(if_match)


IfMatch = Annotated[service.IfMatch, Depends(_if_match)]


@router.get("/tasks", response_model=list[TaskPublic])
def list_tasks(request: Request, db: DatabaseDep, owner: PathOwner, query: Annotated[TaskQuery, Query()]) -> Response:
    """The caller's tasks, filtered, sorted (newest first by default) and paged. `X-Total-Count` is the number
    of matches; `Link` has the `next` and `prev` pages."""
    with db.read() as conn:
        page, total = service.list_tasks(conn, scope=owner.scope(conn), query=query)
    headers = page_headers(request.url, offset=query.offset, limit=query.limit, total=total)
    return json_response(tasks_json(page), headers=headers)


@router.post("/tasks", response_model=TaskPublic, status_code=status.HTTP_201_CREATED)
def create_task(db: DatabaseDep, owner: PathOwner, data: TaskCreate, key: IdempotencyKey = None) -> Response:
    """With `Idempotency-Key`, a retry (same key and body, within 24 hours) returns the first result."""
    with db.transaction() as conn:
        scope = owner.scope(conn)
        return run_once(
            conn,
            scope=scope,
            key=key,
            request=("create_task", data),
            answer=lambda: task_response(service.create_task(conn, scope=scope, data=data), status_code=201),
        )


# Before /tasks/{task_id}, so "bulk" is never read as an id.
@router.post("/tasks/bulk", response_model=BulkResult)
def bulk_update(db: DatabaseDep, owner: PathOwner, data: TaskBulk, key: IdempotencyKey = None) -> Response:
    """Complete, reopen, trash (`delete`), restore, `tag` or `untag` up to 500 tasks; `updated` counts those changed.
    With `Idempotency-Key`, a retry returns the first result."""
    with db.transaction() as conn:
        scope = owner.scope(conn)
        return run_once(
            conn,
            scope=scope,
            key=key,
            request=("bulk_update", data),
            answer=lambda: json_response(
                BulkResult(
                    updated=service.bulk_update(conn, scope=scope, action=data.action, ids=data.ids, tag=data.tag)
                )
            ),
        )


@router.get(
    "/tasks/{task_id}",
    response_model=TaskPublic,
    responses={status.HTTP_304_NOT_MODIFIED: {"description": "`If-None-Match` matches the current version"}},
)
def get_task(
    db: DatabaseDep, owner: PathOwner, task_id: int, if_none_match: Annotated[list[str] | None, Header()] = None
) -> Response:
    with db.read() as conn:
        task = service.get_task(conn, scope=owner.scope(conn), task_id=task_id)
    if not_modified(if_none_match, task.version):
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=task_headers(task.version))
    return task_response(task)


@router.put("/tasks/{task_id}", response_model=TaskPublic, responses=_CURRENT_TASK)
def replace_task(db: DatabaseDep, owner: PathOwner, task_id: int, data: TaskUpdate, if_match: IfMatch) -> Response:
    """Accepts a partial body like PATCH, so a frontend may send back a whole task object."""
    return update_task(db, owner, task_id, data, if_match)


@router.patch("/tasks/{task_id}", response_model=TaskPublic, responses=_CURRENT_TASK)
def update_task(db: DatabaseDep, owner: PathOwner, task_id: int, data: TaskUpdate, if_match: IfMatch) -> Response:
    with db.transaction() as conn:
        task = service.update_task(conn, scope=owner.scope(conn), task_id=task_id, data=data, if_match=if_match)
    return task_response(task)


@router.patch("/tasks/{task_id}/complete", response_model=TaskPublic, responses=_CURRENT_TASK)
def complete_task(
    db: DatabaseDep,
    owner: PathOwner,
    task_id: int,
    if_match: IfMatch,
    data: Annotated[TaskCompletion | None, Body()] = None,
) -> Response:
    """No body or `{}` toggles completion; `{"completed": bool}` sets it."""
    completed = data.completed if data is not None else None
    with db.transaction() as conn:
        scope = owner.scope(conn)
        task = service.set_completion(conn, scope=scope, task_id=task_id, completed=completed, if_match=if_match)
    return task_response(task)


@router.post("/tasks/{task_id}/restore", response_model=TaskPublic, responses=_CURRENT_TASK)
def restore_task(db: DatabaseDep, owner: PathOwner, task_id: int, if_match: IfMatch) -> Response:
    """Bring a task back from the trash (404 if it is not in the trash)."""
    with db.transaction() as conn:
        task = service.restore_task(conn, scope=owner.scope(conn), task_id=task_id, if_match=if_match)
    return task_response(task)


@router.delete(
    "/tasks/{task_id}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response, responses=_CURRENT_TASK
)
def delete_task(
    db: DatabaseDep,
    owner: PathOwner,
    task_id: int,
    if_match: IfMatch,
    permanent: Annotated[bool, Query(description="Delete for good (from the trash or directly)")] = False,
) -> None:
    """Moves the task to the trash; `?permanent=true` deletes it for good."""
    with db.transaction() as conn:
        scope = owner.scope(conn)
        service.delete_task(conn, scope=scope, task_id=task_id, permanent=permanent, if_match=if_match)


@router.get("/stats", response_model=TaskStats)
def task_stats(
    db: DatabaseDep,
    owner: PathOwner,
    tz: Annotated[TimeZoneName, Query(description="IANA time zone that decides what 'today' is")] = "UTC",
) -> Response:
    with db.read() as conn:
        stats = service.task_stats(conn, scope=owner.scope(conn), zone=ZoneInfo(tz))
    return json_response(stats)


TagName = Annotated[str, Path(min_length=1, max_length=80, description="A tag's name, in any case")]


@router.get("/tags", response_model=list[TagPublic])
def list_tags(db: DatabaseDep, owner: PathOwner) -> Response:
    """The tags of the caller's live tasks with how many have each, by name."""
    with db.read() as conn:
        tags = service.list_tags(conn, scope=owner.scope(conn))
    return json_response(tags)


@router.patch("/tags/{name}", response_model=TagPublic)
def rename_tag(db: DatabaseDep, owner: PathOwner, name: TagName, data: TagRename) -> Response:
    """Rename a tag on every task that has it, merging into a tag of the new name; every task changed gets a new
    version."""
    with db.transaction() as conn:
        tag = service.rename_tag(conn, scope=owner.scope(conn), name=name, new_name=data.name)
    return json_response(tag)


@router.delete("/tags/{name}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response)
def delete_tag(db: DatabaseDep, owner: PathOwner, name: TagName) -> None:
    """Take a tag off every task that has it."""
    with db.transaction() as conn:
        service.delete_tag(conn, scope=owner.scope(conn), name=name)
