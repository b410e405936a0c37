"""Routes under /api/auth: register, login (JSON and OAuth2 form), and the current user."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, status
from fastapi.security import OAuth2PasswordRequestForm
from pydantic import ValidationError

from todo_api.auth import service
from todo_api.auth.deps import CurrentUser
from todo_api.auth.models import AuthResponse, Token, User, UserLogin, UserPublic, UserRegister
from todo_api.config import SettingsDep
from todo_api.db import SessionDep
from todo_api.errors import Unauthorized

router = APIRouter(prefix="/api/auth", tags=["auth"])


@router.post("/register", response_model=AuthResponse, status_code=status.HTTP_201_CREATED)
def register(session: SessionDep, settings: SettingsDep, data: UserRegister) -> AuthResponse:
    user = service.register_user(session, data=data, settings=settings)
    return service.auth_response(user, message="User registered successfully", settings=settings)


@router.post("/login", response_model=AuthResponse)
def login(session: SessionDep, settings: SettingsDep, data: UserLogin) -> AuthResponse:
    user = service.authenticate(session, email=data.email, password=data.password, settings=settings)
    return service.auth_response(user, message="Login successful", settings=settings)


@router.post("/token", response_model=Token)
def token(session: SessionDep, settings: SettingsDep, form: Annotated[OAuth2PasswordRequestForm, Depends()]) -> Token:
    """OAuth2 password flow (`username` = email), for the Authorize button in /docs."""
    try:
        credentials = UserLogin(email=form.username, password=form.password)
    except ValidationError:
        raise Unauthorized(service.INVALID_LOGIN) from None
    user = service.authenticate(session, email=credentials.email, password=credentials.password, settings=settings)
    access_token, _ = service.issue_access_token(user, settings=settings)
    return Token(access_token=access_token)


@router.get("/me", response_model=UserPublic)
def me(user: CurrentUser) -> User:
    return user
