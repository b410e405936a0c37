"""Every table model, imported in one place so Alembic and the tests see the whole schema."""

from todo_api.auth.models import User
from todo_api.tasks.models import Task, TaskCount

__all__ = ["Task", "TaskCount", "User"]
