"""The users table and the request/response schemas of the auth routes."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, StringConstraints
from sqlalchemy import Column, String
from sqlmodel import Field, SQLModel

from todo_api.db import UTCDateTime, utcnow
from todo_api.fields import Email, LoginEmail, NoNul
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


class Token(SQLModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"


class AuthResponse(SQLModel):
    message: str
    user: UserPublic
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int
