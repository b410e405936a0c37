"""Request dependencies: the authenticated user, and the owner a `/api/{user_id}/...` path may address."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordBearer

from todo_api.auth.better_auth import BetterAuth
from todo_api.auth.models import User
from todo_api.auth.service import user_from_token
from todo_api.config import SettingsDep
from todo_api.db import SessionDep
from todo_api.errors import NotFound, Unauthorized

# Only reads `Authorization: Bearer ...`; declared so /docs shows the Authorize button.
bearer_token = OAuth2PasswordBearer(tokenUrl="/api/auth/token", auto_error=False)

TASK_NOT_FOUND = "Task not found"


def _better_auth(request: Request) -> BetterAuth:
    better_auth: BetterAuth = request.app.state.better_auth
    return better_auth


def get_current_user(
    session: SessionDep,
    settings: SettingsDep,
    better_auth: Annotated[BetterAuth, Depends(_better_auth)],
    token: Annotated[str | None, Depends(bearer_token)],
) -> User:
    if not token:
        raise Unauthorized("Not authenticated")
    return user_from_token(session, token=token, settings=settings, better_auth=better_auth)


CurrentUser = Annotated[User, Depends(get_current_user)]


def get_path_owner(user_id: str, user: CurrentUser) -> User:
    """`{user_id}` must be the caller (or `me`); anyone else's is answered exactly like a missing task."""
    if user_id != "me" and user_id != user.id:
        raise NotFound(TASK_NOT_FOUND)
    return user


PathOwner = Annotated[User, Depends(get_path_owner)]
