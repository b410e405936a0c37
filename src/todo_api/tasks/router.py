"""Routes under /api/{user_id}/tasks and /api/{user_id}/stats: each validates its input, opens one database session
(a read or a write, see `Database`; a bare connection for the three hottest) in which it proves the owner and makes
one service call; the HTTP details (ETag, If-Match, If-None-Match, paging headers) are handled here."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Body, Depends, Header, Query, Request, Response, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel, TypeAdapter
from pydantic_core import to_json, to_jsonable_python
from sqlalchemy import Row
from sqlmodel import Session

from todo_api.auth.deps import Owner, PathOwner
from todo_api.auth.service import OwnerScope
from todo_api.db import DatabaseDep
from todo_api.errors import error_responses
from todo_api.headers import etag, if_match_versions, not_modified, paging_links
from todo_api.idempotency import IdempotencyKey, fingerprint, run_once
from todo_api.tasks import service
from todo_api.tasks.models import (
    BulkResult,
    Task,
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


# Responses are serialized here, once, in the endpoint's own thread-pool hop: returned as objects, FastAPI would
# validate them again against `response_model` (which stays, for the OpenAPI document) in another hop.
_TASK = TypeAdapter(TaskPublic)


def _json(
    body: bytes | str, *, status_code: int = status.HTTP_200_OK, headers: dict[str, str] | None = None
) -> Response:
    return Response(body, status_code=status_code, media_type="application/json", headers=headers)


def _task_json(task: Task | Row[Any], *, status_code: int = status.HTTP_200_OK) -> Response:
    """One task (an ORM object from a write, or a row from a read), with its ETag."""
    if isinstance(task, Task):
        body = _TASK.dump_json(_TASK.validate_python(task, from_attributes=True))
    else:
        body = to_json(service.public(task))
    return _json(body, status_code=status_code, headers={"ETag": etag(task.version)})


@router.get("/tasks", response_model=list[TaskPublic])
def list_tasks(
    request: Request,
    db: DatabaseDep,
    owner: PathOwner,
    query: Annotated[TaskQuery, Query()],
) -> Response:
    """The caller's tasks, filtered, sorted (newest first by default) and paged. `X-Total-Count` is the number
    of matches; `Link` has the `next` and `prev` pages."""
    with db.connection() as connection:
        page, total = service.list_tasks(connection, owner=owner.scope(connection), query=query)
    headers = {"X-Total-Count": str(total)}
    links = paging_links(request.url, offset=query.offset, limit=query.limit, total=total)
    if links:
        headers["Link"] = links
    return _json(to_json([service.public(row) for row in page]), headers=headers)


def _once(
    db: DatabaseDep,
    owner: Owner,
    key: str | None,
    data: BaseModel,
    *,
    operation: str,
    status_code: int,
    write: Callable[[Session, str], Any],
    render: Callable[[Any], Any],
) -> tuple[int, Any]:
    """A write that an `Idempotency-Key` makes safe to retry: `run_once` in the route's write session."""
    with db.write() as session:
        owner_id = owner.id(session)
        return run_once(
            session,
            owner_id=owner_id,
            key=key,
            request_fingerprint=fingerprint(operation, data.model_dump(mode="json")),
            status_code=status_code,
            write=lambda: write(session, owner_id),
            render=render,
        )


@router.post("/tasks", response_model=TaskPublic, status_code=status.HTTP_201_CREATED)
def create_task(db: DatabaseDep, owner: PathOwner, data: TaskCreate, key: IdempotencyKey = None) -> Response:
    """With `Idempotency-Key`, a retry (same key and body, within 24 hours) returns the first result."""
    if key is None:
        # One INSERT, which also proves the caller's session (`Database.connection`: no BEGIN on PostgreSQL).
        with db.connection() as connection:
            task = service.create_task(connection, owner=owner.scope(connection), data=data)
        return _task_json(task, status_code=status.HTTP_201_CREATED)
    status_code, body = _once(
        db,
        owner,
        key,
        data,
        operation="create_task",
        status_code=status.HTTP_201_CREATED,
        write=lambda session, owner_id: service.create_task(
            session.connection(), owner=OwnerScope(owner_id), data=data
        ),
        render=lambda task: to_jsonable_python(service.public(task)),
    )
    return JSONResponse(body, status_code=status_code, headers={"ETag": etag(body["version"])})


# Before /tasks/{task_id}, so "bulk" is never read as an id.
@router.post("/tasks/bulk", response_model=BulkResult)
def bulk_update(db: DatabaseDep, owner: PathOwner, data: TaskBulk, key: IdempotencyKey = None) -> Any:
    """Complete, reopen, trash (`delete`) or restore up to 500 tasks; `updated` counts those changed.
    With `Idempotency-Key`, a retry returns the first result."""
    status_code, body = _once(
        db,
        owner,
        key,
        data,
        operation="bulk_update",
        status_code=status.HTTP_200_OK,
        write=lambda session, owner_id: service.bulk_update(
            session, owner_id=owner_id, action=data.action, ids=data.ids, commit=False
        ),
        render=lambda updated: BulkResult(updated=updated).model_dump(mode="json"),
    )
    return JSONResponse(body, status_code=status_code)


@router.get(
    "/tasks/{task_id}",
    response_model=TaskPublic,
    responses={status.HTTP_304_NOT_MODIFIED: {"description": "`If-None-Match` matches the current version"}},
)
def get_task(
    db: DatabaseDep,
    owner: PathOwner,
    task_id: int,
    if_none_match: Annotated[list[str] | None, Header()] = None,
) -> Response:
    with db.connection() as connection:
        task = service.get_task(connection, owner=owner.scope(connection), task_id=task_id)
    if not_modified(if_none_match, task.version):
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers={"ETag": etag(task.version)})
    return _task_json(task)


@router.put("/tasks/{task_id}", response_model=TaskPublic, responses=_CURRENT_TASK)
def replace_task(
    db: DatabaseDep,
    owner: PathOwner,
    task_id: int,
    data: TaskUpdate,
    if_match: IfMatch,
) -> Response:
    """Accepts a partial body like PATCH, so a frontend may send back a whole task object."""
    return update_task(db, owner, task_id, data, if_match)


@router.patch("/tasks/{task_id}", response_model=TaskPublic, responses=_CURRENT_TASK)
def update_task(
    db: DatabaseDep,
    owner: PathOwner,
    task_id: int,
    data: TaskUpdate,
    if_match: IfMatch,
) -> Response:
    with db.write() as session:
        task = service.update_task(session, owner_id=owner.id(session), task_id=task_id, data=data, if_match=if_match)
    return _task_json(task)


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
    with db.write() as session:
        owner_id = owner.id(session)
        task = service.set_completion(
            session, owner_id=owner_id, task_id=task_id, completed=completed, if_match=if_match
        )
    return _task_json(task)


@router.post("/tasks/{task_id}/restore", response_model=TaskPublic, responses=_CURRENT_TASK)
def restore_task(db: DatabaseDep, owner: PathOwner, task_id: int, if_match: IfMatch) -> Response:
    """Bring a task back from the trash (404 if it is not in the trash)."""
    with db.write() as session:
        task = service.restore_task(session, owner_id=owner.id(session), task_id=task_id, if_match=if_match)
    return _task_json(task)


@router.delete(
    "/tasks/{task_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=_CURRENT_TASK,
)
def delete_task(
    db: DatabaseDep,
    owner: PathOwner,
    task_id: int,
    if_match: IfMatch,
    permanent: Annotated[bool, Query(description="Delete for good (from the trash or directly)")] = False,
) -> None:
    """Moves the task to the trash; `?permanent=true` deletes it for good."""
    with db.write() as session:
        owner_id = owner.id(session)
        service.delete_task(session, owner_id=owner_id, task_id=task_id, permanent=permanent, if_match=if_match)


@router.get("/stats", response_model=TaskStats)
def task_stats(
    db: DatabaseDep,
    owner: PathOwner,
    tz: Annotated[TimeZoneName, Query(description="IANA time zone that decides what 'today' is")] = "UTC",
) -> TaskStats:
    with db.read() as session:
        return service.task_stats(session, owner_id=owner.id(session), zone=ZoneInfo(tz))
