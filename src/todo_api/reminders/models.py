"""The tables of reminders (the schedule, the in-app feed, push subscriptions, the delivery queue; see migration
0009) and the schemas of their routes."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, StringConstraints
from pydantic import Field as PydanticField
from sqlalchemy import BigInteger, Column, ForeignKey, Index, Integer, String, UniqueConstraint, text
from sqlmodel import Field, SQLModel

from todo_api.db import UTCDateTime
from todo_api.fields import NoNul

_ID_TYPE = BigInteger().with_variant(Integer, "sqlite")

Channel = Literal["email", "push"]
CHANNELS: tuple[Channel, ...] = ("email", "push")


class ReminderJob(SQLModel, table=True):
    """A reminder that is armed (its task live and not completed, not fired yet): kept by triggers on `tasks` from
    `tasks.reminders`; the scheduler deletes a row when it fires it."""

    __tablename__ = "reminder_jobs"
    __table_args__ = (Index("ix_reminder_jobs_fire_at", "fire_at"),)

    task_id: int = Field(
        sa_column=Column(_ID_TYPE, ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True, autoincrement=False)
    )
    reminder_id: int = Field(sa_column=Column(Integer, primary_key=True, autoincrement=False))
    user_id: str = Field(sa_column=Column(String(255), nullable=False))
    fire_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))


class Notification(SQLModel, table=True):
    """One fired reminder in its user's in-app feed (a trigger also writes it as a `reminder` event)."""

    __tablename__ = "notifications"
    __table_args__ = (
        UniqueConstraint("task_id", "reminder_id", "fire_at", name="uq_notifications_task_id_reminder_id_fire_at"),
        Index("ix_notifications_user_id_id", "user_id", "id"),
        Index(
            "ix_notifications_unread_user_id_id",
            "user_id",
            "id",
            postgresql_where=text("read_at IS NULL"),
            sqlite_where=text("read_at IS NULL"),
        ),
    )

    id: int | None = Field(default=None, sa_column=Column(_ID_TYPE, primary_key=True, autoincrement=True))
    user_id: str = Field(sa_column=Column(String(255), ForeignKey("users.id", ondelete="CASCADE"), nullable=False))
    type: str = Field(max_length=20)
    task_id: int = Field(sa_column=Column(_ID_TYPE, nullable=False))  # no foreign key: the task may go first
    reminder_id: int
    title: str = Field(max_length=200)
    due_date: datetime | None = Field(default=None, sa_type=UTCDateTime)
    fire_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    created_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    read_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class PushSubscription(SQLModel, table=True):
    """A browser's Web Push subscription (`PushSubscription.toJSON()`); its keys never leave the server."""

    __tablename__ = "push_subscriptions"
    __table_args__ = (UniqueConstraint("user_id", "endpoint", name="uq_push_subscriptions_user_id_endpoint"),)

    id: int | None = Field(default=None, sa_column=Column(_ID_TYPE, primary_key=True, autoincrement=True))
    user_id: str = Field(sa_column=Column(String(255), ForeignKey("users.id", ondelete="CASCADE"), nullable=False))
    endpoint: str = Field(max_length=2048)
    p256dh: str = Field(max_length=128)
    auth: str = Field(max_length=64)
    created_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    updated_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))


class Delivery(SQLModel, table=True):
    """A send still to make: a notification by email, or to one push subscription. Claimed with a lease
    (`claimed_until`), sent, then deleted, or given its next attempt."""

    __tablename__ = "deliveries"
    __table_args__ = (
        Index("ix_deliveries_next_attempt_at", "next_attempt_at"),
        Index("ix_deliveries_notification_id", "notification_id"),
        Index("ix_deliveries_subscription_id", "subscription_id"),
    )

    id: int | None = Field(default=None, sa_column=Column(_ID_TYPE, primary_key=True, autoincrement=True))
    notification_id: int = Field(
        sa_column=Column(_ID_TYPE, ForeignKey("notifications.id", ondelete="CASCADE"), nullable=False)
    )
    user_id: str = Field(sa_column=Column(String(255), nullable=False))
    channel: str = Field(max_length=10)
    subscription_id: int | None = Field(
        default=None, sa_column=Column(_ID_TYPE, ForeignKey("push_subscriptions.id", ondelete="CASCADE"), nullable=True)
    )
    fire_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    attempts: int = Field(default=0, sa_column=Column(Integer, nullable=False, server_default="0"))
    next_attempt_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    claimed_until: datetime | None = Field(default=None, sa_type=UTCDateTime)


# --- Schemas ---

MAX_SUBSCRIPTIONS = 10


class PushKeys(BaseModel):
    p256dh: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=128), NoNul]
    auth: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64), NoNul]


class PushSubscriptionIn(BaseModel):
    """What the browser's `PushSubscription.toJSON()` returns (`expirationTime` and the rest are ignored)."""

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "endpoint": "https://fcm.googleapis.com/fcm/send/c1KrmpTuRm...",
                    "keys": {
                        "p256dh": "BIPUL12DLfytvTajnryr2PRdAgXS3HGKiLqndGcJGabyhHheJYlNGCeXl1dn18gSJ1WA...",
                        "auth": "FPssNDTKnInHVndSTdbKFw",
                    },
                }
            ]
        }
    }

    endpoint: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2048), NoNul]
    keys: PushKeys


class PushSubscriptionPublic(BaseModel):
    id: int
    endpoint: str
    created_at: datetime
    updated_at: datetime


class PushPublicKey(BaseModel):
    public_key: str = PydanticField(
        description="The VAPID application server key (base64url, uncompressed P-256 point): "
        "`PushManager.subscribe({applicationServerKey})`"
    )


class NotificationPublic(BaseModel):
    id: int
    type: Literal["reminder"]
    task_id: int
    reminder_id: int
    title: str = PydanticField(description="The task's title when the reminder fired")
    due_date: datetime | None
    fire_at: datetime
    created_at: datetime
    read_at: datetime | None


class NotificationQuery(BaseModel):
    unread: bool | None = PydanticField(default=None, description="true: only those not read yet")
    limit: int = PydanticField(default=50, ge=1, le=200)
    offset: int = PydanticField(default=0, ge=0, le=2**31 - 1)
