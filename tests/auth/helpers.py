"""Helpers shared by the session, account and password-reset tests: logins, token checks, database nudges."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt
from fastapi.testclient import TestClient
from sqlalchemy import update
from sqlmodel import Session, col

from tests.factories import PASSWORD, TEST_SECRET, RegisteredUser, bearer, better_auth_token, unique_email
from todo_api.auth.models import AuthSession, DeletedUser, User

LOGIN = "/api/auth/login"
REFRESH = "/api/auth/refresh"
LOGOUT = "/api/auth/logout"
LOGOUT_ALL = "/api/auth/logout-all"
SESSIONS = "/api/auth/sessions"
ME = "/api/auth/me"
CHANGE_PASSWORD = "/api/auth/change-password"
FORGOT_PASSWORD = "/api/auth/forgot-password"
RESET_PASSWORD = "/api/auth/reset-password"

NEW_PASSWORD = "a brand new passphrase for the tests"
OTHER_PASSWORD = "yet another uncommon passphrase"

EXPIRES_IN = 604800
AUTH_KEYS = {"message", "user", "access_token", "refresh_token", "token_type", "expires_in"}
TOKEN_PAIR_KEYS = {"access_token", "refresh_token", "token_type", "expires_in"}
USER_KEYS = {"id", "email", "name", "created_at", "notification_channels"}
SESSION_KEYS = {"id", "created_at", "last_used_at", "expires_at", "user_agent", "ip", "current"}

NOT_AUTHENTICATED = {"detail": "Not authenticated"}
INVALID_CREDENTIALS = {"detail": "Could not validate credentials"}
INVALID_LOGIN = {"detail": "Incorrect email or password"}
INVALID_REFRESH = {"detail": "Invalid or expired refresh token"}

# Strings that must never appear in any response body of these flows.
FORBIDDEN_IN_RESPONSES = (TEST_SECRET, "$bcrypt", "$2b$", "password_hash", PASSWORD, NEW_PASSWORD, OTHER_PASSWORD)


def refuse_secrets(response: httpx.Response) -> None:
    """Response hook: fails the request that returned a password, a hash or the signing secret."""
    response.read()
    text = response.text
    for secret in FORBIDDEN_IN_RESPONSES:
        assert secret not in text, f"{response.request.method} {response.request.url.path} leaked {secret!r}"
        assert json.dumps(secret)[1:-1] not in text


def guard(client: TestClient) -> TestClient:
    client.event_hooks = {**client.event_hooks, "response": [*client.event_hooks["response"], refuse_secrets]}
    return client


@dataclass(frozen=True)
class Login:
    """One session of a user, as the login answer gave it."""

    access_token: str
    refresh_token: str
    body: dict[str, Any]

    @property
    def headers(self) -> dict[str, str]:
        return bearer(self.access_token)

    @property
    def session_id(self) -> str:
        return session_id_of(self.access_token)


def first_session(user: RegisteredUser) -> Login:
    """The session registration opened."""
    return Login(access_token=user.token, refresh_token=user.body["refresh_token"], body=user.body)


def login(client: TestClient, email: str, password: str = PASSWORD, *, user_agent: str | None = None) -> Login:
    headers = {"User-Agent": user_agent} if user_agent is not None else {}
    response = client.post(LOGIN, json={"email": email, "password": password}, headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == AUTH_KEYS
    return Login(access_token=body["access_token"], refresh_token=body["refresh_token"], body=body)


def refresh(client: TestClient, refresh_token: str) -> httpx.Response:
    return client.post(REFRESH, json={"refresh_token": refresh_token})


def refreshed(client: TestClient, refresh_token: str) -> Login:
    response = refresh(client, refresh_token)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == TOKEN_PAIR_KEYS
    return Login(access_token=body["access_token"], refresh_token=body["refresh_token"], body=body)


def claims_of(token: str) -> dict[str, Any]:
    return dict(jwt.decode(token, TEST_SECRET, algorithms=["HS256"], issuer="todo-api"))


def session_id_of(token: str) -> str:
    sid = claims_of(token)["sid"]
    assert isinstance(sid, str) and sid
    return sid


def me(client: TestClient, headers: dict[str, str]) -> httpx.Response:
    return client.get(ME, headers=headers)


def assert_works(client: TestClient, headers: dict[str, str]) -> dict[str, Any]:
    response = me(client, headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def assert_unauthorized(response: httpx.Response, body: dict[str, Any] = INVALID_CREDENTIALS) -> None:
    assert response.status_code == 401, response.text
    assert response.json() == body
    assert response.headers["www-authenticate"] == "Bearer"


def assert_refused(client: TestClient, headers: dict[str, str]) -> None:
    assert_unauthorized(me(client, headers))


def assert_refresh_refused(client: TestClient, refresh_token: str) -> None:
    assert_unauthorized(refresh(client, refresh_token), INVALID_REFRESH)


def assert_session_dead(client: TestClient, login: Login) -> None:
    """Neither the access token nor the refresh token of the session works any more."""
    assert_refused(client, login.headers)
    assert_refresh_refused(client, login.refresh_token)


def assert_session_alive(client: TestClient, login: Login) -> Login:
    """The access token works and the refresh token rotates; returns the rotated session."""
    assert_works(client, login.headers)
    return refreshed(client, login.refresh_token)


def assert_validation_error(response: httpx.Response, *hidden: str) -> list[dict[str, Any]]:
    """A 422 in FastAPI's shape that does not echo any of the hidden values."""
    assert response.status_code == 422, response.text
    body = response.json()
    assert set(body) == {"detail"}
    assert isinstance(body["detail"], list) and body["detail"], body
    for value in hidden:
        assert value not in response.text
    errors: list[dict[str, Any]] = body["detail"]
    return errors


def list_sessions(client: TestClient, headers: dict[str, str]) -> list[dict[str, Any]]:
    response = client.get(SESSIONS, headers=headers)
    assert response.status_code == 200, response.text
    body: list[dict[str, Any]] = response.json()
    return body


def new_sub() -> str:
    return f"ba_{uuid.uuid4().hex}"


def ba_headers(sub: str, *, email: str | None = None, iat: int | None = None) -> dict[str, str]:
    """A Better Auth token for the user; a random `jti` makes every one distinct, `iat` defaults to now."""
    issued = int(time.time()) if iat is None else iat
    return bearer(better_auth_token(sub, email=email, name="Better Auth User", iat=issued, jti=uuid.uuid4().hex))


def better_auth_user(client: TestClient, *, iat: int | None = None) -> tuple[str, str, dict[str, str]]:
    """A Better Auth user, created by its first request: (sub, email, headers of that first token)."""
    sub, email = new_sub(), unique_email("ba")
    headers = ba_headers(sub, email=email, iat=iat)
    assert assert_works(client, headers)["id"] == sub
    return sub, email, headers


def seconds_ago(seconds: int) -> int:
    return int(time.time()) - seconds


def commit_and_forget(db_session: Session) -> None:
    """Commit a direct change and drop cached rows, so the app (sharing this session) reads it back."""
    db_session.commit()
    db_session.expire_all()


def expire_session(db_session: Session, session_id: str) -> None:
    db_session.execute(
        update(AuthSession)
        .where(col(AuthSession.id) == session_id)
        .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
    )
    commit_and_forget(db_session)


def move_back(db_session: Session, *, user_id: str, seconds: int) -> None:
    """Pretend the last logout-all / password change (users.tokens_valid_after) happened `seconds` earlier.

    PyJWT refuses a token whose `iat` lies in the future, so "a token issued in a later second" is made by
    moving the server-side instant into the past instead of the token's `iat` into the future.
    """
    user = db_session.get(User, user_id)
    assert user is not None and user.tokens_valid_after is not None
    db_session.execute(
        update(User)
        .where(col(User.id) == user_id)
        .values(tokens_valid_after=user.tokens_valid_after - timedelta(seconds=seconds))
    )
    commit_and_forget(db_session)


def move_deletion_back(db_session: Session, *, user_id: str, seconds: int) -> None:
    """Pretend the deletion of a Better Auth user (its tombstone) happened `seconds` earlier."""
    tombstone = db_session.get(DeletedUser, user_id)
    assert tombstone is not None
    db_session.execute(
        update(DeletedUser)
        .where(col(DeletedUser.id) == user_id)
        .values(deleted_at=tombstone.deleted_at - timedelta(seconds=seconds))
    )
    commit_and_forget(db_session)
