"""Request dependencies: who is calling, from where, and the owner a `/api/{user_id}/...` path may address.

Dependencies that only read the request are `async def`: FastAPI runs a plain `def` dependency in the thread
pool, and each such hop costs more than the work. Those that touch the database stay `def`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordBearer

from todo_api.auth.better_auth import BetterAuth
from todo_api.auth.models import User
from todo_api.auth.service import Principal, principal_from_token
from todo_api.auth.sessions import ClientInfo
from todo_api.config import SettingsDep
from todo_api.db import SessionDep
from todo_api.errors import NotFound, Unauthorized
from todo_api.ratelimit import RateLimiter, client_ip

# Only reads `Authorization: Bearer ...`; declared so /docs shows the Authorize button.
bearer_token = OAuth2PasswordBearer(tokenUrl="/api/auth/token", auto_error=False)

TASK_NOT_FOUND = "Task not found"
MAX_TOKEN_LENGTH = 8192


async def _better_auth(request: Request) -> BetterAuth:
    better_auth: BetterAuth = request.app.state.better_auth
    return better_auth


def get_principal(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    better_auth: Annotated[BetterAuth, Depends(_better_auth)],
    token: Annotated[str | None, Depends(bearer_token)],
) -> Principal:
    if not token:
        raise Unauthorized("Not authenticated")
    if len(token) > MAX_TOKEN_LENGTH:  # refused before any parsing
        raise Unauthorized()
    principal = principal_from_token(session, token=token, settings=settings, better_auth=better_auth)
    request.state.user_id = principal.user.id  # for the access log
    return principal


CurrentPrincipal = Annotated[Principal, Depends(get_principal)]


async def get_current_user(principal: CurrentPrincipal) -> User:
    return principal.user


CurrentUser = Annotated[User, Depends(get_current_user)]


async def get_path_owner(user_id: str, user: CurrentUser) -> User:
    """`{user_id}` must be the caller (or `me`); anyone else's is answered exactly like a missing task."""
    if user_id != "me" and user_id != user.id:
        raise NotFound(TASK_NOT_FOUND)
    return user


PathOwner = Annotated[User, Depends(get_path_owner)]


async def get_client_info(request: Request) -> ClientInfo:
    return ClientInfo(user_agent=request.headers.get("user-agent"), ip=client_ip(request))


Client = Annotated[ClientInfo, Depends(get_client_info)]


async def get_rate_limiter(request: Request) -> RateLimiter:
    limiter: RateLimiter = request.app.state.rate_limiter
    return limiter


Limiter = Annotated[RateLimiter, Depends(get_rate_limiter)]


async def _password_hashing_slot(request: Request) -> AsyncIterator[None]:
    """Bounds the password hashes computed at once to this process's share of the CPUs.

    Declared before the session on every route that hashes, so a flood of logins waits here, in the event loop,
    holding neither a database slot nor a thread: everyone else's requests keep their latency.
    """
    async with request.app.state.password_hashing_slots:
        yield


PasswordHashing = Depends(_password_hashing_slot)
