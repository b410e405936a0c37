"""Login sessions: refresh-token rotation with reuse detection, revocation, and what tokens they cover. Nothing here
commits: the route's block does."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, update
from sqlmodel import Session, col, select

from todo_api.auth.models import AuthSession, PasswordResetToken, RefreshToken, TokenPair, User
from todo_api.config import Settings
from todo_api.db import orm, utcnow
from todo_api.errors import NotFound, Unauthorized
from todo_api.security import create_access_token, hash_token, new_opaque_token

INVALID_REFRESH = "Invalid or expired refresh token"
SESSION_NOT_FOUND = "Session not found"


@dataclass(frozen=True)
class ClientInfo:
    user_agent: str | None
    ip: str | None


def start_session(session: Session, *, user: User, client: ClientInfo, settings: Settings) -> TokenPair:
    """A new session for the user and its first access and refresh tokens."""
    now = utcnow()
    auth_session = AuthSession(
        id=str(uuid.uuid4()),
        user_id=user.id,
        created_at=now,
        last_used_at=now,
        expires_at=now + timedelta(seconds=settings.REFRESH_TOKEN_EXPIRATION_DELTA),
        user_agent=(client.user_agent or None) and client.user_agent[:512],
        ip=client.ip or None,
    )
    session.add(auth_session)
    return _tokens(session, user=user, auth_session=auth_session, settings=settings)


def _tokens(session: Session, *, user: User, auth_session: AuthSession, settings: Settings) -> TokenPair:
    refresh_token = new_opaque_token()
    session.add(RefreshToken(session_id=auth_session.id, token_hash=hash_token(refresh_token)))
    access_token, expires_in = create_access_token(
        subject=user.id, session_id=auth_session.id, email=user.email, name=user.name, settings=settings
    )
    return TokenPair(access_token=access_token, refresh_token=refresh_token, expires_in=expires_in)


def refresh(connection: Connection, *, refresh_token: str, settings: Settings) -> TokenPair | None:
    """Rotate: the presented token is spent and a new pair issued. A spent token presented again is theft: the
    session is revoked, and None says so (the route answers 401 after its block commits the revocation)."""
    now = utcnow()
    with orm(connection) as session:
        row = session.exec(
            select(RefreshToken, AuthSession, User)
            .join(AuthSession, col(AuthSession.id) == RefreshToken.session_id)
            .join(User, col(User.id) == AuthSession.user_id)
            .where(RefreshToken.token_hash == hash_token(refresh_token))
        ).first()
        if row is None:
            raise Unauthorized(INVALID_REFRESH)
        token, auth_session, user = row
        if auth_session.revoked_at is not None or auth_session.expires_at <= now:
            raise Unauthorized(INVALID_REFRESH)
        # Spend the token in one conditional UPDATE, so two racing uses cannot both succeed.
        spent = session.execute(
            update(RefreshToken)
            .where(col(RefreshToken.id) == token.id, col(RefreshToken.rotated_at).is_(None))
            .values(rotated_at=now)
        )
        if spent.rowcount != 1:  # type: ignore[attr-defined]
            auth_session.revoked_at = now
            return None
        auth_session.last_used_at = now
        auth_session.expires_at = now + timedelta(seconds=settings.REFRESH_TOKEN_EXPIRATION_DELTA)
        return _tokens(session, user=user, auth_session=auth_session, settings=settings)


def revoke_session(connection: Connection, *, user_id: str, session_id: str) -> None:
    """End one of the user's live sessions (its refresh token and access tokens die); others' -> NotFound."""
    revoked = connection.execute(
        update(AuthSession)
        .where(
            col(AuthSession.id) == session_id,
            col(AuthSession.user_id) == user_id,
            col(AuthSession.revoked_at).is_(None),
        )
        .values(revoked_at=utcnow())
    )
    if revoked.rowcount != 1:
        raise NotFound(SESSION_NOT_FOUND)


def session_of_refresh_token(session: Session, *, user_id: str, refresh_token: str) -> str | None:
    return session.exec(
        select(AuthSession.id)
        .join(RefreshToken, col(RefreshToken.session_id) == AuthSession.id)
        .where(RefreshToken.token_hash == hash_token(refresh_token), AuthSession.user_id == user_id)
    ).first()


def end_all_sessions(session: Session, *, user: User, now: datetime | None = None) -> None:
    """Revoke every session and refuse every session-less token issued until now."""
    now = now or utcnow()
    session.execute(
        update(AuthSession)
        .where(col(AuthSession.user_id) == user.id, col(AuthSession.revoked_at).is_(None))
        .values(revoked_at=now)
    )
    user.tokens_valid_after = now
    session.add(user)


def void_reset_tokens(session: Session, *, user: User, now: datetime) -> None:
    session.execute(
        update(PasswordResetToken)
        .where(col(PasswordResetToken.user_id) == user.id, col(PasswordResetToken.used_at).is_(None))
        .values(used_at=now)
    )


def list_sessions(connection: Connection, *, user_id: str) -> list[AuthSession]:
    with orm(connection) as session:
        return list(
            session.exec(
                select(AuthSession)
                .where(
                    AuthSession.user_id == user_id,
                    col(AuthSession.revoked_at).is_(None),
                    col(AuthSession.expires_at) > utcnow(),
                )
                .order_by(col(AuthSession.created_at).desc(), col(AuthSession.id))
            ).all()
        )
