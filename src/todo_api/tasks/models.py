"""The tasks table and its request/response schemas."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AfterValidator, BeforeValidator, StringConstraints, computed_field, field_validator
from sqlalchemy import BigInteger, CheckConstraint, Column, ForeignKey, Index, Integer, String
from sqlmodel import Field, SQLModel

from todo_api.db import UTCDateTime, utcnow
from todo_api.fields import NoNul


class Priority(StrEnum):
    low = "low"
    medium = "medium"
    high = "high"


def _as_utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _blank_to_none(value: object) -> object:
    return None if isinstance(value, str) and not value.strip() else value


Title = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200), NoNul]
Description = Annotated[str, StringConstraints(max_length=1000), NoNul]
Category = Annotated[str, StringConstraints(strip_whitespace=True, max_length=50), NoNul]
DueDate = Annotated[datetime, AfterValidator(_as_utc)]
"""Naive datetimes are taken as UTC; everything is stored and returned in UTC."""


class TaskCreate(SQLModel):
    title: Title
    description: Description | None = None
    completed: bool = False
    priority: Priority = Priority.medium
    category: Annotated[Category | None, BeforeValidator(_blank_to_none)] = None
    due_date: DueDate | None = None


class TaskUpdate(SQLModel):
    """Every field optional (PUT and PATCH alike); absent fields stay as they are."""

    title: Title | None = None
    description: Description | None = None
    completed: bool | None = None
    priority: Priority | None = None
    category: Annotated[Category | None, BeforeValidator(_blank_to_none)] = None
    due_date: DueDate | None = None

    @field_validator("title", "completed", "priority", mode="before")
    @classmethod
    def _not_null(cls, value: object) -> object:
        # Only runs for fields that were sent: absent means "unchanged", an explicit null is a mistake.
        if value is None:
            raise ValueError("may be omitted but not null")
        return value


class TaskCompletion(SQLModel):
    """`{}` (or no body) toggles; `{"completed": true|false}` sets."""

    completed: bool | None = None


class Task(SQLModel, table=True):
    __tablename__ = "tasks"
    __table_args__ = (
        CheckConstraint("priority IN ('low', 'medium', 'high')", name="priority"),
        # The default listing (one user's tasks, newest first); also serves every lookup by user_id.
        Index("ix_tasks_user_id_created_at", "user_id", "created_at", "id"),
        {"sqlite_autoincrement": True},
    )

    id: int | None = Field(
        default=None,
        sa_column=Column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
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

    @computed_field  # type: ignore[prop-decorator]
    @property
    def status(self) -> Literal["pending", "completed"]:
        return "completed" if self.completed else "pending"
