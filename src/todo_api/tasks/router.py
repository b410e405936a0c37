"""Routes under /api/{user_id}/tasks: each validates its input and makes one service call."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Body, Response, status
from fastapi.responses import JSONResponse

from todo_api.auth.deps import PathOwner
from todo_api.db import SessionDep
from todo_api.errors import error_responses
from todo_api.idempotency import IdempotencyKey, fingerprint, run_once
from todo_api.tasks import service
from todo_api.tasks.models import Task, TaskCompletion, TaskCreate, TaskPublic, TaskUpdate

router = APIRouter(
    prefix="/api/{user_id}/tasks", tags=["tasks"], responses=error_responses(400, 401, 404, 413, 422, 503)
)


@router.get("", response_model=list[TaskPublic])
def list_tasks(session: SessionDep, owner: PathOwner) -> Sequence[Task]:
    """The caller's tasks, newest first."""
    return service.list_tasks(session, owner=owner)


@router.post("", response_model=TaskPublic, status_code=status.HTTP_201_CREATED)
def create_task(session: SessionDep, owner: PathOwner, data: TaskCreate, key: IdempotencyKey = None) -> Any:
    """With `Idempotency-Key`, a retry (same key and body, within 24 hours) returns the first result."""
    status_code, body = run_once(
        session,
        owner=owner,
        key=key,
        request_fingerprint=fingerprint("create_task", data.model_dump(mode="json")),
        status_code=status.HTTP_201_CREATED,
        write=lambda: service.create_task(session, owner=owner, data=data, commit=False),
        render=lambda task: TaskPublic.model_validate(task).model_dump(mode="json"),
    )
    return JSONResponse(body, status_code=status_code)


@router.get("/{task_id}", response_model=TaskPublic)
def get_task(session: SessionDep, owner: PathOwner, task_id: int) -> Task:
    return service.get_task(session, owner=owner, task_id=task_id)


@router.put("/{task_id}", response_model=TaskPublic)
def replace_task(session: SessionDep, owner: PathOwner, task_id: int, data: TaskUpdate) -> Task:
    """Accepts a partial body like PATCH, so a frontend may send back a whole task object."""
    return service.update_task(session, owner=owner, task_id=task_id, data=data)


@router.patch("/{task_id}", response_model=TaskPublic)
def update_task(session: SessionDep, owner: PathOwner, task_id: int, data: TaskUpdate) -> Task:
    return service.update_task(session, owner=owner, task_id=task_id, data=data)


@router.patch("/{task_id}/complete", response_model=TaskPublic)
def complete_task(
    session: SessionDep,
    owner: PathOwner,
    task_id: int,
    data: Annotated[TaskCompletion | None, Body()] = None,
) -> Task:
    """No body or `{}` toggles completion; `{"completed": bool}` sets it."""
    completed = data.completed if data is not None else None
    return service.set_completion(session, owner=owner, task_id=task_id, completed=completed)


@router.delete("/{task_id}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response)
def delete_task(session: SessionDep, owner: PathOwner, task_id: int) -> None:
    service.delete_task(session, owner=owner, task_id=task_id)
