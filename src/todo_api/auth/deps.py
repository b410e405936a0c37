"""Request dependencies: who is calling, from where, and the owner a `/api/{user_id}/...` path may address.

Every dependency here is `async def` and does no I/O: FastAPI runs a plain `def` dependency in a thread-pool hop
of its own, and each hop costs more than the work. What a dependency can prove without I/O it proves before the
input is validated (a missing or bad shared-secret token is a 401, another user's path a 404); what needs the
database (is the token's session still live? Better Auth's keys and tables) the route proves first thing in its
own database block: `owner.scope(conn)` on the routes under `/api/{user_id}`, `caller.principal(conn)` or
`caller.user(conn)` on the account routes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Form, Request
from fastapi.security import OAuth2PasswordBearer
from sqlalchemy import Connection

from todo_api.auth.better_auth import BetterAuth
from todo_api.auth.models import User
from todo_api.auth.principal import (
    OwnerScope,
    Principal,
    current_user,
    principal_from_token,
    shared_secret_claims,
    unproven_session,
)
from todo_api.auth.sessions import ClientInfo
from todo_api.config import Settings
from todo_api.errors import NotFound, Unauthorized
from todo_api.ratelimit import RateLimiter, client_ip

TASK_NOT_FOUND = "Task not found"
MAX_TOKEN_LENGTH = 8192


@dataclass(frozen=True)
class Caller:
    """The bearer token a request presented: `principal()` proves it.

    Missing, oversized and (for shared-secret JWTs) badly signed or expired tokens are refused before the route
    runs; the rest (a live session, Better Auth's keys or tables) is checked by `principal()`, which every
    authenticated route calls first in its database session, so the check shares the route's one thread-pool
    hop and connection.
    """

    token: str
    claims: dict[str, Any] | None  # a shared-secret JWT's, verified without I/O (`shared_secret_claims`)
    settings: Settings
    better_auth: BetterAuth
    request_state: Any  # starlette's `request.state`: the access log reads `user_id` from it

    @property
    def subject(self) -> str | None:
        """The user id, when the token proved it without I/O."""
        return None if self.claims is None else str(self.claims["sub"])

    def principal(self, connection: Connection) -> Principal:
        principal = principal_from_token(
            connection, token=self.token, claims=self.claims, settings=self.settings, better_auth=self.better_auth
        )
        self.request_state.user_id = principal.user_id  # for the access log
        return principal

    def user(self, connection: Connection) -> User:
        """The caller's account, for the routes that read or change it."""
        return current_user(connection, self.principal(connection))


class BearerCaller(OAuth2PasswordBearer):
    """The dependency that reads `Authorization: Bearer ...` into a `Caller`. An OAuth2 scheme, so /docs shows the
    Authorize button; one dependency, not a scheme and a function (FastAPI's dependency solving costs as much per
    dependency as a small query)."""

    async def __call__(self, request: Request) -> Caller:  # type: ignore[override]
        token = await super().__call__(request)
        if not token:
            raise Unauthorized("Not authenticated")
        if len(token) > MAX_TOKEN_LENGTH:  # refused before any parsing
            raise Unauthorized()
        state = request.app.state
        return Caller(
            token=token,
            claims=shared_secret_claims(token, settings=state.settings),
            settings=state.settings,
            better_auth=state.better_auth,
            request_state=request.state,
        )


get_caller = BearerCaller(tokenUrl="/api/auth/token", auto_error=False)
CallerDep = Annotated[Caller, Depends(get_caller)]


@dataclass(frozen=True)
class Owner:
    """A caller addressing `/api/{user_id}/...`; `scope()` proves the token and that `{user_id}` is the caller."""

    caller: Caller
    path_user_id: str

    def scope(self, connection: Connection) -> OwnerScope:
        """The rows this request may touch. One of our tokens is proven by the route's first statement
        (`OwnerScope.rows`); any other token here, now (Better Auth's keys or tables, on this connection)."""
        caller = self.caller
        session_id = unproven_session(caller.claims, settings=caller.settings)
        if session_id is None or caller.subject is None:
            user_id = caller.principal(connection).user_id
            _check_path(self.path_user_id, user_id)
            return OwnerScope(user_id)
        _check_path(self.path_user_id, caller.subject)
        caller.request_state.user_id = caller.subject  # for the access log
        return OwnerScope(caller.subject, session_id=session_id)


def _check_path(path_user_id: str, user_id: str) -> None:
    if path_user_id != "me" and path_user_id != user_id:
        raise NotFound(TASK_NOT_FOUND)


async def get_path_owner(user_id: str, caller: CallerDep) -> Owner:
    if caller.subject is not None:
        _check_path(user_id, caller.subject)  # before the input is validated: someone else's path is a 404
    return Owner(caller=caller, path_user_id=user_id)


PathOwner = Annotated[Owner, Depends(get_path_owner)]


async def get_client_info(request: Request) -> ClientInfo:
    return ClientInfo(user_agent=request.headers.get("user-agent"), ip=client_ip(request))


Client = Annotated[ClientInfo, Depends(get_client_info)]


async def get_rate_limiter(request: Request) -> RateLimiter:
    limiter: RateLimiter = request.app.state.rate_limiter
    return limiter


Limiter = Annotated[RateLimiter, Depends(get_rate_limiter)]


async def _password_hashing_slot(request: Request) -> AsyncIterator[None]:
    """Bounds the password hashes computed at once to this process's share of the CPUs.

    Declared before the database on every route that hashes, so a flood of logins waits here, in the event loop,
    holding neither a connection nor a thread: everyone else's requests keep their latency.
    """
    async with request.app.state.password_hashing_slots:
        yield


PasswordHashing = Depends(_password_hashing_slot)


@dataclass(frozen=True)
class PasswordRequestForm:
    username: str
    password: str


async def _password_form(
    username: Annotated[str, Form()],
    password: Annotated[str, Form(json_schema_extra={"format": "password"})],
    grant_type: Annotated[str | None, Form(pattern="^password$")] = None,  # noqa: ARG001 (validated, then unused)
) -> PasswordRequestForm:
    """OAuth2's password-grant form (RFC 6749 4.3), as FastAPI's `OAuth2PasswordRequestForm` reads it, but `async`:
    that class is a plain-`def` dependency (a thread-pool hop of its own). Other fields (scope, client_id,
    client_secret) are ignored: this service has no scopes or clients."""
    return PasswordRequestForm(username=username, password=password)


PasswordForm = Annotated[PasswordRequestForm, Depends(_password_form)]
