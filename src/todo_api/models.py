"""Every table model, imported in one place so Alembic and the tests see the whole schema."""

from todo_api.auth.models import (
    AuthSession,
    DeletedUser,
    PasswordResetToken,
    RefreshToken,
    RevokedToken,
    User,
)
from todo_api.events.models import EventCounter, StreamTicket, TaskEvent
from todo_api.idempotency import IdempotencyRecord
from todo_api.reminders.models import Delivery, Notification, PushSubscription, ReminderJob
from todo_api.tasks.models import Task, TaskCount, TaskTag

__all__ = [
    "AuthSession",
    "DeletedUser",
    "Delivery",
    "EventCounter",
    "IdempotencyRecord",
    "Notification",
    "PasswordResetToken",
    "PushSubscription",
    "RefreshToken",
    "ReminderJob",
    "RevokedToken",
    "StreamTicket",
    "Task",
    "TaskCount",
    "TaskEvent",
    "TaskTag",
    "User",
]
