"""Task reads and writes, always scoped to one owner: another user's task is indistinguishable from none."""

from __future__ import annotations

from collections.abc import Sequence

from sqlmodel import Session, col, select
from sqlmodel.sql.expression import SelectOfScalar

from todo_api.auth.deps import TASK_NOT_FOUND
from todo_api.auth.models import User
from todo_api.db import utcnow
from todo_api.errors import NotFound
from todo_api.tasks.models import Task, TaskCreate, TaskUpdate

MAX_ID = 2**63 - 1


def _owned_by(owner: User) -> SelectOfScalar[Task]:
    return select(Task).where(Task.user_id == owner.id)


def _get_owned(session: Session, *, owner: User, task_id: int) -> Task:
    # An id no row can have (negative, beyond 64-bit) is just another missing task, never a database error.
    task = session.exec(_owned_by(owner).where(Task.id == task_id)).first() if 0 < task_id <= MAX_ID else None
    if task is None:
        raise NotFound(TASK_NOT_FOUND)
    return task


def _set_completed(task: Task, completed: bool) -> None:
    if completed != task.completed:
        task.completed = completed
        task.completed_at = utcnow() if completed else None


def list_tasks(session: Session, *, owner: User) -> Sequence[Task]:
    return session.exec(_owned_by(owner).order_by(col(Task.created_at).desc(), col(Task.id).desc())).all()


def get_task(session: Session, *, owner: User, task_id: int) -> Task:
    return _get_owned(session, owner=owner, task_id=task_id)


def create_task(session: Session, *, owner: User, data: TaskCreate, commit: bool = True) -> Task:
    """A new task of the owner's; with `commit=False` it is only flushed (the caller commits, with more)."""
    now = utcnow()
    task = Task.model_validate(
        data,
        update={
            "user_id": owner.id,
            "priority": data.priority.value,
            "completed_at": now if data.completed else None,
            "created_at": now,
            "updated_at": now,
        },
    )
    session.add(task)
    if commit:
        session.commit()
    else:
        session.flush()
    return task


def update_task(session: Session, *, owner: User, task_id: int, data: TaskUpdate) -> Task:
    task = _get_owned(session, owner=owner, task_id=task_id)
    changes = data.model_dump(exclude_unset=True)
    completed = changes.pop("completed", None)
    if "priority" in changes:
        changes["priority"] = changes["priority"].value
    task.sqlmodel_update(changes)
    if completed is not None:
        _set_completed(task, completed)
    task.updated_at = utcnow()
    session.add(task)
    session.commit()
    return task


def set_completion(session: Session, *, owner: User, task_id: int, completed: bool | None) -> Task:
    task = _get_owned(session, owner=owner, task_id=task_id)
    _set_completed(task, not task.completed if completed is None else completed)
    task.updated_at = utcnow()
    session.add(task)
    session.commit()
    return task


def delete_task(session: Session, *, owner: User, task_id: int) -> None:
    task = _get_owned(session, owner=owner, task_id=task_id)
    session.delete(task)
    session.commit()
