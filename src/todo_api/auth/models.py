"""The users table and the request/response schemas of the auth routes."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, StringConstraints
from pydantic import Field as PydanticField
from sqlalchemy import JSON, Column, ForeignKey, String
from sqlalchemy.dialects import postgresql
from sqlmodel import Field, SQLModel

from todo_api.db import UTCDateTime, utcnow
from todo_api.fields import Email, LoginEmail, NoNul, NotNull
from todo_api.reminders.models import CHANNELS, Channel
from todo_api.security import is_common_password

PASSWORD_MIN_LENGTH = 8
PASSWORD_MAX_LENGTH = 128


def _not_common(password: str) -> str:
    if is_common_password(password):
        raise ValueError("this password is too common; choose a less predictable one")
    return password


NewPassword = Annotated[
    str,
    StringConstraints(min_length=PASSWORD_MIN_LENGTH, max_length=PASSWORD_MAX_LENGTH),
    NoNul,
    AfterValidator(_not_common),
]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100), NoNul]


class User(SQLModel, table=True):
    __tablename__ = "users"

    id: str = Field(primary_key=True, max_length=255)
    # Normalized (trimmed, lower-cased); NULL only for a Better Auth user whose token has no email.
    email: str | None = Field(default=None, sa_column=Column(String(320), unique=True, nullable=True))
    name: str = Field(default="", max_length=255)
    # NULL for users who only ever come from Better Auth: they cannot log in with a password here.
    password_hash: str | None = Field(default=None, max_length=255, repr=False)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    # Set by logout-all and password changes: tokens without a session here (Better Auth's) issued at or
    # before this instant are refused.
    tokens_valid_after: datetime | None = Field(default=None, sa_type=UTCDateTime)
    # Where reminders go besides the in-app feed (`reminders.models.CHANNELS`).
    notification_channels: list[str] = Field(
        default_factory=lambda: ["email", "push"],
        sa_column=Column(
            JSON().with_variant(postgresql.JSONB(), "postgresql"),
            nullable=False,
            server_default='["email", "push"]',
        ),
    )


class AuthSession(SQLModel, table=True):
    """One login: the refresh-token chain and every access token carrying its id as `sid`."""

    __tablename__ = "auth_sessions"

    id: str = Field(primary_key=True, max_length=36)
    user_id: str = Field(
        sa_column=Column(String(255), ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True)
    )
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    last_used_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    expires_at: datetime = Field(sa_type=UTCDateTime)
    revoked_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    user_agent: str | None = Field(default=None, max_length=512)
    ip: str | None = Field(default=None, max_length=64)


class RefreshToken(SQLModel, table=True):
    """Every refresh token a session was given; a rotated one presented again is theft."""

    __tablename__ = "refresh_tokens"

    id: int | None = Field(default=None, primary_key=True)
    session_id: str = Field(
        sa_column=Column(String(36), ForeignKey("auth_sessions.id", ondelete="CASCADE"), nullable=False, index=True)
    )
    token_hash: str = Field(sa_column=Column(String(64), unique=True, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    rotated_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class PasswordResetToken(SQLModel, table=True):
    __tablename__ = "password_reset_tokens"

    id: int | None = Field(default=None, primary_key=True)
    user_id: str = Field(
        sa_column=Column(String(255), ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True)
    )
    token_hash: str = Field(sa_column=Column(String(64), unique=True, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    expires_at: datetime = Field(sa_type=UTCDateTime)
    used_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class RevokedToken(SQLModel, table=True):
    """Better Auth tokens logged out one by one (they have no session here), kept until they expire."""

    __tablename__ = "revoked_tokens"

    token_hash: str = Field(primary_key=True, max_length=64)
    user_id: str = Field(sa_column=Column(String(255), ForeignKey("users.id", ondelete="CASCADE"), nullable=False))
    expires_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False, index=True))


class DeletedUser(SQLModel, table=True):
    """Tombstone: a Better Auth token issued before the deletion must not re-create the account."""

    __tablename__ = "deleted_users"

    id: str = Field(primary_key=True, max_length=255)
    deleted_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class UserRegister(SQLModel):
    name: Name
    email: Email
    password: NewPassword


class UserLogin(SQLModel):
    email: LoginEmail
    password: Annotated[str, StringConstraints(min_length=1, max_length=1024), NoNul]


class UserPublic(SQLModel):
    id: str
    email: str | None
    name: str
    created_at: datetime
    notification_channels: list[Channel] = PydanticField(
        description="Where reminders go besides the in-app feed, which always gets them"
    )


class Token(SQLModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"


class AuthResponse(SQLModel):
    message: str
    user: UserPublic
    access_token: str
    refresh_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int


class TokenPair(SQLModel):
    access_token: str
    refresh_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int


RefreshTokenValue = Annotated[str, StringConstraints(min_length=1, max_length=256), NoNul]


class RefreshRequest(SQLModel):
    refresh_token: RefreshTokenValue


class LogoutRequest(SQLModel):
    refresh_token: RefreshTokenValue | None = None


class SessionPublic(SQLModel):
    id: str
    created_at: datetime
    last_used_at: datetime
    expires_at: datetime
    user_agent: str | None
    ip: str | None
    current: bool


def _channel_set(channels: list[Channel]) -> list[Channel]:
    return [channel for channel in CHANNELS if channel in channels]


class UserUpdate(SQLModel):
    name: Annotated[Name | None, NotNull] = None
    email: Annotated[Email | None, NotNull] = None
    notification_channels: Annotated[
        list[Channel] | None, NotNull, PydanticField(max_length=len(CHANNELS)), AfterValidator(_channel_set)
    ] = None


class ChangePassword(SQLModel):
    current_password: Annotated[str, StringConstraints(min_length=1, max_length=1024), NoNul]
    new_password: NewPassword


class ForgotPassword(SQLModel):
    email: Email


class ResetPassword(SQLModel):
    token: Annotated[str, StringConstraints(min_length=1, max_length=256), NoNul]
    new_password: NewPassword


class DeleteAccount(SQLModel):
    password: Annotated[str, StringConstraints(max_length=1024), NoNul] | None = None


class Message(SQLModel):
    message: str
