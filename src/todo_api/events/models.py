"""The tables of live changes: the outbox of task events (written by triggers, see the 0008 migration), the per-user
event counters, and single-use stream tickets."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Column, ForeignKey, Index, String, Text
from sqlmodel import Field, SQLModel

from todo_api.db import UTCDateTime


class TaskEvent(SQLModel, table=True):
    """One change of one of a user's tasks, numbered `seq` 1, 2, 3, ... per user. Written by triggers on `tasks`
    in the transaction of the change; read, never written, by the application (and deleted after EVENT_RETENTION)."""

    __tablename__ = "task_events"
    __table_args__ = (Index("ix_task_events_created_at", "created_at"),)

    user_id: str = Field(sa_column=Column(String(255), primary_key=True))
    seq: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    type: str = Field(sa_column=Column(String(20), nullable=False))
    task_id: int = Field(sa_column=Column(BigInteger, nullable=False))
    data: str = Field(sa_column=Column(Text, nullable=False))  # the event's JSON
    created_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))


class EventCounter(SQLModel, table=True):
    """A user's last event number (the triggers bump it)."""

    __tablename__ = "event_counters"

    user_id: str = Field(sa_column=Column(String(255), primary_key=True))
    seq: int = Field(sa_column=Column(BigInteger, nullable=False))


class StreamTicket(SQLModel, table=True):
    """A single-use ticket for the events stream (`EventSource` cannot send a bearer token), stored as its SHA-256,
    with what the stream needs to keep checking the token it stands for."""

    __tablename__ = "stream_tickets"

    ticket_hash: str = Field(primary_key=True, max_length=64)
    user_id: str = Field(sa_column=Column(String(255), ForeignKey("users.id", ondelete="CASCADE"), nullable=False))
    session_id: str | None = Field(default=None, max_length=36)  # one of our tokens: its session
    token_hash: str | None = Field(default=None, max_length=64)  # a Better Auth token: its hash (logout)
    token_issued_at: datetime | None = Field(default=None, sa_type=UTCDateTime)  # (logout-all)
    token_expires_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    expires_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
