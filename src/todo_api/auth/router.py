"""Routes under /api/auth: accounts, sessions and password recovery. Each makes one service call."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Body, Depends, Response, status
from fastapi.security import OAuth2PasswordRequestForm
from pydantic import ValidationError

from todo_api import mail
from todo_api.auth import service, sessions
from todo_api.auth.deps import Client, CurrentPrincipal, CurrentUser, Limiter, PasswordHashing
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
from todo_api.db import SessionDep
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
def register(session: SessionDep, settings: SettingsDep, client: Client, data: UserRegister) -> AuthResponse:
    return service.register_user(session, data=data, client=client, settings=settings)


@router.post(
    "/login",
    response_model=AuthResponse,
    dependencies=[Depends(rate_limit("RATE_LIMIT_LOGIN")), PasswordHashing],
    responses=error_responses(400, 401, 413, 422, 429, 503),
)
def login(
    session: SessionDep, settings: SettingsDep, client: Client, limiter: Limiter, data: UserLogin
) -> AuthResponse:
    return service.login(
        session, email=data.email, password=data.password, client=client, settings=settings, limiter=limiter
    )


@router.post(
    "/token",
    response_model=Token,
    dependencies=[Depends(rate_limit("RATE_LIMIT_TOKEN")), PasswordHashing],
    responses=error_responses(400, 401, 413, 422, 429, 503),
)
def token(
    session: SessionDep,
    settings: SettingsDep,
    client: Client,
    limiter: Limiter,
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
) -> Token:
    """OAuth2 password flow (`username` = email), for the Authorize button in /docs."""
    try:
        credentials = UserLogin(email=form.username, password=form.password)
    except ValidationError:
        raise Unauthorized(service.INVALID_LOGIN) from None
    answer = service.login(
        session,
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
def refresh(session: SessionDep, settings: SettingsDep, data: RefreshRequest) -> TokenPair:
    return sessions.refresh(session, refresh_token=data.refresh_token, settings=settings)


@router.post(
    "/logout",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=error_responses(400, 401, 413, 422, 503),
)
def logout(
    session: SessionDep, principal: CurrentPrincipal, data: Annotated[LogoutRequest | None, Body()] = None
) -> None:
    service.logout(session, principal=principal, refresh_token=data.refresh_token if data else None)


@router.post(
    "/logout-all", status_code=status.HTTP_204_NO_CONTENT, response_class=Response, responses=error_responses(401, 503)
)
def logout_all(session: SessionDep, user: CurrentUser) -> None:
    service.logout_all(session, user=user)


@router.get("/sessions", response_model=list[SessionPublic], responses=error_responses(401, 503))
def list_sessions(session: SessionDep, principal: CurrentPrincipal) -> list[SessionPublic]:
    return [
        SessionPublic.model_validate(row, update={"current": row.id == principal.session_id})
        for row in sessions.list_sessions(session, user=principal.user)
    ]


@router.delete(
    "/sessions/{session_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=error_responses(401, 404, 503),
)
def revoke_session(session: SessionDep, user: CurrentUser, session_id: str) -> None:
    sessions.revoke_session(session, user=user, session_id=session_id)


@router.get("/me", response_model=UserPublic, responses=error_responses(401, 503))
def me(user: CurrentUser) -> User:
    return user


@router.patch("/me", response_model=UserPublic, responses=error_responses(400, 401, 409, 413, 422, 503))
def update_me(session: SessionDep, user: CurrentUser, data: UserUpdate) -> User:
    return service.update_profile(session, user=user, data=data)


@router.delete(
    "/me",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    dependencies=[PasswordHashing],
    responses=error_responses(400, 401, 413, 422, 503),
)
def delete_me(
    session: SessionDep,
    settings: SettingsDep,
    user: CurrentUser,
    data: Annotated[DeleteAccount | None, Body()] = None,
) -> None:
    """A local account confirms with `{"password": ...}`; a Better Auth account needs no body."""
    service.delete_account(session, user=user, password=data.password if data else None, settings=settings)


@router.post(
    "/change-password",
    response_model=AuthResponse,
    dependencies=[PasswordHashing],
    responses=error_responses(400, 401, 413, 422, 503),
)
def change_password(
    session: SessionDep, settings: SettingsDep, user: CurrentUser, client: Client, data: ChangePassword
) -> AuthResponse:
    return service.change_password(
        session,
        user=user,
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
    session: SessionDep,
    settings: SettingsDep,
    limiter: Limiter,
    background: BackgroundTasks,
    data: ForgotPassword,
) -> Message:
    """Same answer whether or not the account exists; the email is sent after the response."""
    limiter.hit(settings.RATE_LIMIT_FORGOT_PASSWORD_PER_EMAIL, "forgot_password_email", data.email)
    reset_token = service.create_reset_token(session, email=data.email, settings=settings)
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
def reset_password(session: SessionDep, settings: SettingsDep, data: ResetPassword) -> None:
    service.reset_password(session, token=data.token, new_password=data.new_password, settings=settings)
