"""Accounts: registration, login, profile, passwords, deletion and logout.

Nothing here commits: the block that opened the connection does. The functions that run bcrypt (a quarter of a
second at cost 12) take the `Database` and open their blocks themselves, around the hash and never across it, so no
connection (and on SQLite no write lock) is held through it.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import TYPE_CHECKING

from sqlalchemy import Connection, delete, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from todo_api.auth import sessions
from todo_api.auth.models import (
    AuthResponse,
    AuthSession,
    DeletedUser,
    PasswordResetToken,
    RevokedToken,
    TokenPair,
    User,
    UserPublic,
    UserRegister,
    UserUpdate,
)
from todo_api.auth.principal import Principal
from todo_api.auth.sessions import ClientInfo
from todo_api.config import Settings
from todo_api.db import Database, orm, utcnow
from todo_api.errors import BadRequest, Conflict, Unauthorized
from todo_api.logs import audit
from todo_api.metrics import get_metrics
from todo_api.ratelimit import RateLimiter, TooManyRequests
from todo_api.security import hash_password, hash_token, new_opaque_token, verify_password

if TYPE_CHECKING:
    from todo_api.auth.deps import Caller

INVALID_LOGIN = "Incorrect email or password"
EMAIL_TAKEN = "Email already registered"
EMAIL_BELONGS_TO_ANOTHER = "The email in this token belongs to another account"
WRONG_CURRENT_PASSWORD = "Current password is incorrect"
NO_PASSWORD = "This account has no password here; it signs in through Better Auth"
INVALID_RESET = "Invalid or expired reset token"
CONFIRM_WITH_PASSWORD = "Confirm the deletion with your current password"


def register_user(db: Database, *, data: UserRegister, client: ClientInfo, settings: Settings) -> AuthResponse:
    password_hash = hash_password(data.password, rounds=settings.BCRYPT_ROUNDS)
    with db.transaction() as conn, orm(conn) as session:
        user = User(id=str(uuid.uuid4()), email=data.email, name=data.name, password_hash=password_hash)
        session.add(user)
        try:
            session.flush()  # the unique index on email decides, also between two simultaneous sign-ups
        except IntegrityError:
            raise Conflict(EMAIL_TAKEN) from None
        pair = sessions.start_session(session, user=user, client=client, settings=settings)
    return _auth_response(user, pair, message="User registered successfully")


def login(
    db: Database, *, email: str, password: str, client: ClientInfo, settings: Settings, limiter: RateLimiter
) -> AuthResponse:
    """Password login; failures for one email are counted from every IP and refused past the limit."""
    logins = get_metrics().logins
    try:
        limiter.check(settings.RATE_LIMIT_LOGIN_PER_EMAIL, "login_failures", email)
    except TooManyRequests:
        logins.labels("rate_limited").inc()
        raise
    with db.read() as conn, orm(conn) as session:
        user = session.exec(select(User).where(User.email == email)).first()
    password_hash = user.password_hash if user is not None else None
    if not verify_password(password, password_hash, rounds=settings.BCRYPT_ROUNDS) or user is None:
        limiter.record(settings.RATE_LIMIT_LOGIN_PER_EMAIL, "login_failures", email)
        logins.labels("failure").inc()
        audit("login_failed", user_id=user.id if user else None, ip=client.ip)
        raise Unauthorized(INVALID_LOGIN)
    with db.transaction() as conn, orm(conn) as session:
        pair = sessions.start_session(session, user=user, client=client, settings=settings)
    logins.labels("success").inc()
    audit("login_succeeded", user_id=user.id, ip=client.ip)
    return _auth_response(user, pair, message="Login successful")


def _auth_response(user: User, pair: TokenPair, *, message: str) -> AuthResponse:
    return AuthResponse(
        message=message,
        user=UserPublic.model_validate(user),
        access_token=pair.access_token,
        refresh_token=pair.refresh_token,
        expires_in=pair.expires_in,
    )


def update_profile(conn: Connection, *, user: User, data: UserUpdate) -> User:
    changes = data.model_dump(exclude_unset=True)
    if not changes:
        return user
    with orm(conn) as session:
        session.add(user)
        user.sqlmodel_update(changes)
        user.updated_at = utcnow()
        try:
            session.flush()
        except IntegrityError:
            raise Conflict(EMAIL_TAKEN) from None
    return user


def change_password(
    db: Database, *, caller: Caller, current_password: str, new_password: str, client: ClientInfo, settings: Settings
) -> AuthResponse:
    """A wrong current password is a 400 (a typo must not log the user out); success ends every session."""
    with db.read() as conn:
        user = caller.user(conn)
    if user.password_hash is None:
        raise BadRequest(NO_PASSWORD)
    if not verify_password(current_password, user.password_hash, rounds=settings.BCRYPT_ROUNDS):
        raise BadRequest(WRONG_CURRENT_PASSWORD)
    password_hash = hash_password(new_password, rounds=settings.BCRYPT_ROUNDS)
    with db.transaction() as conn, orm(conn) as session:
        session.add(user)
        _set_password(session, user=user, password_hash=password_hash)
        pair = sessions.start_session(session, user=user, client=client, settings=settings)
    audit("password_changed", user_id=user.id, via="change_password")
    return _auth_response(user, pair, message="Password changed")


def _set_password(session: Session, *, user: User, password_hash: str) -> None:
    """New hash; every session, token and outstanding reset link issued before now stops working."""
    now = utcnow()
    user.password_hash = password_hash
    user.updated_at = now
    sessions.end_all_sessions(session, user=user, now=now)
    sessions.void_reset_tokens(session, user=user, now=now)


def create_reset_token(conn: Connection, *, email: str, settings: Settings) -> str | None:
    """A single-use reset token for an account with a password, or None (the caller answers the same)."""
    with orm(conn) as session:
        user = session.exec(select(User).where(User.email == email, col(User.password_hash).is_not(None))).first()
        if user is None:
            return None
        token = new_opaque_token()
        session.add(
            PasswordResetToken(
                user_id=user.id,
                token_hash=hash_token(token),
                expires_at=utcnow() + timedelta(seconds=settings.PASSWORD_RESET_EXPIRATION),
            )
        )
    return token


def reset_password(db: Database, *, token: str, new_password: str, settings: Settings) -> None:
    """Spend a reset token (once: a conditional UPDATE) and set the new password."""
    token_hash = hash_token(token)
    with db.read() as conn, orm(conn) as session:
        reset = session.exec(select(PasswordResetToken).where(PasswordResetToken.token_hash == token_hash)).first()
    if reset is None or reset.used_at is not None or reset.expires_at <= utcnow():
        raise BadRequest(INVALID_RESET)
    password_hash = hash_password(new_password, rounds=settings.BCRYPT_ROUNDS)
    with db.transaction() as conn, orm(conn) as session:
        now = utcnow()
        spent = session.execute(
            update(PasswordResetToken)
            .where(
                col(PasswordResetToken.id) == reset.id,
                col(PasswordResetToken.used_at).is_(None),
                col(PasswordResetToken.expires_at) > now,
            )
            .values(used_at=now)
        )
        user = session.get(User, reset.user_id)
        if spent.rowcount != 1 or user is None:  # type: ignore[attr-defined]
            raise BadRequest(INVALID_RESET)
        _set_password(session, user=user, password_hash=password_hash)
    audit("password_changed", user_id=reset.user_id, via="reset_password")


def delete_account(db: Database, *, caller: Caller, password: str | None, settings: Settings) -> None:
    """Delete the user with their tasks and sessions; a local account must confirm with its password."""
    with db.read() as conn:
        user = caller.user(conn)
    if user.password_hash is not None and (
        password is None or not verify_password(password, user.password_hash, rounds=settings.BCRYPT_ROUNDS)
    ):
        raise BadRequest(CONFIRM_WITH_PASSWORD)
    with db.transaction() as conn, orm(conn) as session:
        session.execute(delete(User).where(col(User.id) == user.id))
        session.merge(DeletedUser(id=user.id, deleted_at=utcnow()))


def logout(conn: Connection, *, principal: Principal, refresh_token: str | None) -> None:
    """End the session of the token used (a Better Auth token: that token alone), and a named one."""
    now = utcnow()
    session_ids = []
    with orm(conn) as session:
        if principal.session_id is not None:
            session_ids.append(principal.session_id)
        else:
            session.merge(
                RevokedToken(
                    token_hash=hash_token(principal.token),
                    user_id=principal.user_id,
                    expires_at=principal.expires_at or now + timedelta(days=1),
                )
            )
            session.execute(delete(RevokedToken).where(col(RevokedToken.expires_at) < now))
        if refresh_token is not None:
            named = sessions.session_of_refresh_token(session, user_id=principal.user_id, refresh_token=refresh_token)
            if named is not None:
                session_ids.append(named)
        if session_ids:
            session.execute(
                update(AuthSession)
                .where(col(AuthSession.id).in_(session_ids), col(AuthSession.revoked_at).is_(None))
                .values(revoked_at=now)
            )


def logout_all(conn: Connection, *, user: User) -> None:
    with orm(conn) as session:
        session.add(user)
        sessions.end_all_sessions(session, user=user)
