"""Accounts: registration, password login, and turning a verified token into a user row."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from todo_api.auth.better_auth import BetterAuth, TokenKind, token_kind
from todo_api.auth.models import AuthResponse, User, UserPublic, UserRegister
from todo_api.config import Settings
from todo_api.db import utcnow
from todo_api.errors import Conflict, Unauthorized
from todo_api.security import InvalidToken, create_access_token, decode_token, hash_password, verify_password

logger = logging.getLogger(__name__)

INVALID_LOGIN = "Incorrect email or password"
EMAIL_TAKEN = "Email already registered"
EMAIL_BELONGS_TO_ANOTHER = "The email in this token belongs to another account"


def register_user(session: Session, *, data: UserRegister, settings: Settings) -> User:
    user = User(
        id=str(uuid.uuid4()),
        email=data.email,
        name=data.name,
        password_hash=hash_password(data.password, rounds=settings.BCRYPT_ROUNDS),
    )
    session.add(user)
    try:
        session.commit()
    except IntegrityError:
        # The unique index on email decides, also between two simultaneous sign-ups.
        session.rollback()
        raise Conflict(EMAIL_TAKEN) from None
    return user


def authenticate(session: Session, *, email: str, password: str, settings: Settings) -> User:
    user = session.exec(select(User).where(User.email == email)).first()
    password_hash = user.password_hash if user is not None else None
    if not verify_password(password, password_hash, rounds=settings.BCRYPT_ROUNDS) or user is None:
        raise Unauthorized(INVALID_LOGIN)
    return user


def issue_access_token(user: User, *, settings: Settings) -> tuple[str, int]:
    return create_access_token(subject=user.id, email=user.email, name=user.name, settings=settings)


def auth_response(user: User, *, message: str, settings: Settings) -> AuthResponse:
    token, expires_in = issue_access_token(user, settings=settings)
    return AuthResponse(
        message=message,
        user=UserPublic.model_validate(user),
        access_token=token,
        expires_in=expires_in,
    )


def user_from_token(session: Session, *, token: str, settings: Settings, better_auth: BetterAuth) -> User:
    """The user a valid token speaks for; anything not provably valid is Unauthorized.

    A JWT naming HS256 is judged with the shared secret (ours, or a frontend's); any other JWT only against
    the frontend's JWKS; anything else is a Better Auth session token. Better Auth users all go through
    `_sync_external_user`, whichever way they arrive.
    """
    kind = token_kind(token)
    if kind is not TokenKind.SHARED_SECRET:
        claims = _better_auth_claims(session, token=token, kind=kind, better_auth=better_auth)
        user_id = claims["sub"]
        return _sync_external_user(session, user=session.get(User, user_id), user_id=user_id, claims=claims)
    try:
        claims = decode_token(token, settings=settings)
    except InvalidToken as exc:
        logger.info("token rejected: %s", exc)
        raise Unauthorized() from None
    user = session.get(User, claims["sub"])
    if claims.get("iss") == settings.JWT_ISSUER:
        # One of ours: its user must still exist (a deleted account is never re-created).
        if user is None:
            raise Unauthorized()
        return user
    return _sync_external_user(session, user=user, user_id=claims["sub"], claims=claims)


def _better_auth_claims(
    session: Session, *, token: str, kind: TokenKind, better_auth: BetterAuth
) -> dict[str, Any]:
    try:
        if kind is TokenKind.SESSION:
            return better_auth.session_claims(session, token)
        return better_auth.decode_jwt(token)
    except InvalidToken as exc:
        logger.info("Better Auth %s token rejected: %s", kind.value, exc)
        raise Unauthorized() from None


def _claim_email(claims: dict[str, Any]) -> str | None:
    email = claims.get("email")
    if not isinstance(email, str):
        return None
    email = email.strip().lower()
    return email if email and len(email) <= 320 and "\x00" not in email else None


def _claim_name(claims: dict[str, Any]) -> str | None:
    name = claims.get("name")
    if not isinstance(name, str):
        return None
    return name.replace("\x00", "").strip()[:255] or None


def _sync_external_user(session: Session, *, user: User | None, user_id: str, claims: dict[str, Any]) -> User:
    """Create a Better Auth user on first use, or keep its name and email current; never merge accounts."""
    email, name = _claim_email(claims), _claim_name(claims)
    if user is not None:
        changed = (email is not None and email != user.email) or (name is not None and name != user.name)
        if not changed:
            return user
        user.email = email or user.email
        user.name = name or user.name
        user.updated_at = utcnow()
    else:
        user = User(id=user_id, email=email, name=name or "")
    if email is not None:
        owner = session.exec(select(User.id).where(User.email == email)).first()
        if owner is not None and owner != user_id:
            session.rollback()
            raise Unauthorized(EMAIL_BELONGS_TO_ANOTHER)
    session.add(user)
    try:
        session.commit()
    except IntegrityError:
        # A concurrent first request for the same user won the insert, or another account took the email.
        session.rollback()
        existing = session.get(User, user_id)
        if existing is None or (email is not None and existing.email != email):
            raise Unauthorized(EMAIL_BELONGS_TO_ANOTHER) from None
        return existing
    return user
