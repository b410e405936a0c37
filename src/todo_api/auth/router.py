"""Routes under /api/auth: accounts, sessions and password recovery. Each opens `db.read()` or `db.transaction()`,
proves the caller if the route needs one, and makes one service call; the services that run bcrypt take the
`Database` and open their blocks around the hash themselves."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Body, Depends, Response, status
from pydantic import ValidationError

from todo_api import mail
from todo_api.auth import service, sessions
from todo_api.auth.deps import CallerDep, Client, Limiter, PasswordForm, PasswordHashing
from todo_api.auth.models import (
    AuthResponse,
    ChangePassword,
    DeleteAccount,
    ForgotPassword,
    LogoutRequest,
    Message,
    RefreshRequest,
    ResetPassword,
    SessionPublic,
    Token,
    TokenPair,
    User,
    UserLogin,
    UserPublic,
    UserRegister,
    UserUpdate,
)
from todo_api.config import SettingsDep
from todo_api.db import DatabaseDep
from todo_api.errors import Unauthorized, error_responses
from todo_api.ratelimit import rate_limit

router = APIRouter(prefix="/api/auth", tags=["auth"])

FORGOT_PASSWORD_ANSWER = "If an account with a password exists for this email, a reset link is on its way."


@router.post(
    "/register",
    response_model=AuthResponse,
    status_code=status.HTTP_201_CREATED,
    dependencies=[Depends(rate_limit("RATE_LIMIT_REGISTER")), PasswordHashing],
    responses=error_responses(400, 409, 413, 422, 429, 503),
)
def register(db: DatabaseDep, settings: SettingsDep, client: Client, data: UserRegister) -> AuthResponse:
    return service.register_user(db, data=data, client=client, settings=settings)


@router.post(
    "/login",
    response_model=AuthResponse,
    dependencies=[Depends(rate_limit("RATE_LIMIT_LOGIN")), PasswordHashing],
    responses=error_responses(400, 401, 413, 422, 429, 503),
)
def login(db: DatabaseDep, settings: SettingsDep, client: Client, limiter: Limiter, data: UserLogin) -> AuthResponse:
    return service.login(
        db, email=data.email, password=data.password, client=client, settings=settings, limiter=limiter
    )


@router.post(
    "/token",
    response_model=Token,
    dependencies=[Depends(rate_limit("RATE_LIMIT_TOKEN")), PasswordHashing],
    responses=error_responses(400, 401, 413, 422, 429, 503),
)
def token(
    db: DatabaseDep,
    settings: SettingsDep,
    client: Client,
    limiter: Limiter,
    form: PasswordForm,
) -> Token:
    """OAuth2 password flow (`username` = email), for the Authorize button in /docs."""
    try:
        credentials = UserLogin(email=form.username, password=form.password)
    except ValidationError:
        raise Unauthorized(service.INVALID_LOGIN) from None
    answer = service.login(
        db,
        email=credentials.email,
        password=credentials.password,
        client=client,
        settings=settings,
        limiter=limiter,
    )
    return Token(access_token=answer.access_token)


@router.post(
    "/refresh",
    response_model=TokenPair,
    dependencies=[Depends(rate_limit("RATE_LIMIT_REFRESH"))],
    responses=error_responses(400, 401, 413, 422, 429, 503),
)
def refresh(db: DatabaseDep, settings: SettingsDep, data: RefreshRequest) -> TokenPair:
    with db.transaction() as conn:
        pair = sessions.refresh(conn, refresh_token=data.refresh_token, settings=settings)
    if pair is None:  # a spent token presented again: its session is revoked now (committed), and this is a 401
        raise Unauthorized(sessions.INVALID_REFRESH)
    return pair


@router.post(
    "/logout",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=error_responses(400, 401, 413, 422, 503),
)
def logout(db: DatabaseDep, caller: CallerDep, data: Annotated[LogoutRequest | None, Body()] = None) -> None:
    with db.transaction() as conn:
        principal = caller.principal(conn)
        service.logout(conn, principal=principal, refresh_token=data.refresh_token if data else None)


@router.post(
    "/logout-all", status_code=status.HTTP_204_NO_CONTENT, response_class=Response, responses=error_responses(401, 503)
)
def logout_all(db: DatabaseDep, caller: CallerDep) -> None:
    with db.transaction() as conn:
        service.logout_all(conn, user=caller.user(conn))


@router.get("/sessions", response_model=list[SessionPublic], responses=error_responses(401, 503))
def list_sessions(db: DatabaseDep, caller: CallerDep) -> list[SessionPublic]:
    with db.read() as conn:
        principal = caller.principal(conn)
        rows = sessions.list_sessions(conn, user_id=principal.user_id)
    return [SessionPublic.model_validate(row, update={"current": row.id == principal.session_id}) for row in rows]


@router.delete(
    "/sessions/{session_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=error_responses(401, 404, 503),
)
def revoke_session(db: DatabaseDep, caller: CallerDep, session_id: str) -> None:
    with db.transaction() as conn:
        principal = caller.principal(conn)
        sessions.revoke_session(conn, user_id=principal.user_id, session_id=session_id)


@router.get("/me", response_model=UserPublic, responses=error_responses(401, 503))
def me(db: DatabaseDep, caller: CallerDep) -> User:
    with db.read() as conn:
        return caller.user(conn)


@router.patch("/me", response_model=UserPublic, responses=error_responses(400, 401, 409, 413, 422, 503))
def update_me(db: DatabaseDep, caller: CallerDep, data: UserUpdate) -> User:
    with db.transaction() as conn:
        return service.update_profile(conn, user=caller.user(conn), data=data)


@router.delete(
    "/me",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    dependencies=[PasswordHashing],
    responses=error_responses(400, 401, 413, 422, 503),
)
def delete_me(
    db: DatabaseDep,
    settings: SettingsDep,
    caller: CallerDep,
    data: Annotated[DeleteAccount | None, Body()] = None,
) -> None:
    """A local account confirms with `{"password": ...}`; a Better Auth account needs no body."""
    service.delete_account(db, caller=caller, password=data.password if data else None, settings=settings)


@router.post(
    "/change-password",
    response_model=AuthResponse,
    dependencies=[PasswordHashing],
    responses=error_responses(400, 401, 413, 422, 503),
)
def change_password(
    db: DatabaseDep, settings: SettingsDep, caller: CallerDep, client: Client, data: ChangePassword
) -> AuthResponse:
    return service.change_password(
        db,
        caller=caller,
        current_password=data.current_password,
        new_password=data.new_password,
        client=client,
        settings=settings,
    )


@router.post(
    "/forgot-password",
    response_model=Message,
    status_code=status.HTTP_202_ACCEPTED,
    dependencies=[Depends(rate_limit("RATE_LIMIT_FORGOT_PASSWORD"))],
    responses=error_responses(400, 413, 422, 429, 503),
)
def forgot_password(
    db: DatabaseDep,
    settings: SettingsDep,
    limiter: Limiter,
    background: BackgroundTasks,
    data: ForgotPassword,
) -> Message:
    """Same answer whether or not the account exists; the email is sent after the response."""
    limiter.hit(settings.RATE_LIMIT_FORGOT_PASSWORD_PER_EMAIL, "forgot_password_email", data.email)
    with db.transaction() as conn:
        reset_token = service.create_reset_token(conn, email=data.email, settings=settings)
    if reset_token is not None:
        background.add_task(mail.send_password_reset, settings, to=data.email, token=reset_token)
    return Message(message=FORGOT_PASSWORD_ANSWER)


@router.post(
    "/reset-password",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    dependencies=[Depends(rate_limit("RATE_LIMIT_RESET_PASSWORD")), PasswordHashing],
    responses=error_responses(400, 413, 422, 429, 503),
)
def reset_password(db: DatabaseDep, settings: SettingsDep, data: ResetPassword) -> None:
    service.reset_password(db, token=data.token, new_password=data.new_password, settings=settings)
