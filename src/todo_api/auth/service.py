"""Accounts: registration, login, profile, passwords, deletion, and turning a verified token into a user."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, bindparam, delete, update
from sqlalchemy import select as sa_select
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from todo_api.auth import sessions
from todo_api.auth.better_auth import BetterAuth, TokenKind, token_kind
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
from todo_api.auth.sessions import ClientInfo
from todo_api.config import Settings
from todo_api.db import table, utcnow
from todo_api.errors import BadRequest, Conflict, Unauthorized
from todo_api.logs import audit
from todo_api.metrics import get_metrics
from todo_api.ratelimit import RateLimiter, TooManyRequests
from todo_api.security import (
    InvalidToken,
    decode_token,
    hash_password,
    hash_token,
    new_opaque_token,
    verify_password,
)

INVALID_LOGIN = "Incorrect email or password"
EMAIL_TAKEN = "Email already registered"
EMAIL_BELONGS_TO_ANOTHER = "The email in this token belongs to another account"
WRONG_CURRENT_PASSWORD = "Current password is incorrect"
NO_PASSWORD = "This account has no password here; it signs in through Better Auth"
INVALID_RESET = "Invalid or expired reset token"
CONFIRM_WITH_PASSWORD = "Confirm the deletion with your current password"


@dataclass(frozen=True)
class Principal:
    """Who a request speaks for, and how it proved it."""

    user_id: str
    session_id: str | None  # our tokens are bound to a session; Better Auth's are not
    token: str
    expires_at: datetime | None


def register_user(session: Session, *, data: UserRegister, client: ClientInfo, settings: Settings) -> AuthResponse:
    user = User(
        id=str(uuid.uuid4()),
        email=data.email,
        name=data.name,
        password_hash=hash_password(data.password, rounds=settings.BCRYPT_ROUNDS),
    )
    session.add(user)
    try:
        # The unique index on email decides, also between two simultaneous sign-ups.
        session.flush()
    except IntegrityError:
        session.rollback()
        raise Conflict(EMAIL_TAKEN) from None
    pair = sessions.start_session(session, user=user, client=client, settings=settings)
    session.commit()
    return _auth_response(user, pair, message="User registered successfully")


def login(
    session: Session,
    *,
    email: str,
    password: str,
    client: ClientInfo,
    settings: Settings,
    limiter: RateLimiter,
) -> AuthResponse:
    """Password login; failures for one email are counted from every IP and refused past the limit."""
    logins = get_metrics().logins
    try:
        limiter.check(settings.RATE_LIMIT_LOGIN_PER_EMAIL, "login_failures", email)
    except TooManyRequests:
        logins.labels("rate_limited").inc()
        raise
    user = session.exec(select(User).where(User.email == email)).first()
    password_hash = user.password_hash if user is not None else None
    _end_read(session)
    if not verify_password(password, password_hash, rounds=settings.BCRYPT_ROUNDS) or user is None:
        limiter.record(settings.RATE_LIMIT_LOGIN_PER_EMAIL, "login_failures", email)
        logins.labels("failure").inc()
        audit("login_failed", user_id=user.id if user else None, ip=client.ip)
        raise Unauthorized(INVALID_LOGIN)
    pair = sessions.start_session(session, user=user, client=client, settings=settings)
    session.commit()
    logins.labels("success").inc()
    audit("login_succeeded", user_id=user.id, ip=client.ip)
    return _auth_response(user, pair, message="Login successful")


def _end_read(session: Session) -> None:
    """End the transaction before a slow password check (a quarter of a second at cost 12), so no connection,
    and on SQLite no write lock, is held through it. Loaded rows stay usable (expire_on_commit=False)."""
    session.commit()


def _auth_response(user: User, pair: TokenPair, *, message: str) -> AuthResponse:
    return AuthResponse(
        message=message,
        user=UserPublic.model_validate(user),
        access_token=pair.access_token,
        refresh_token=pair.refresh_token,
        expires_in=pair.expires_in,
    )


def update_profile(session: Session, *, user: User, data: UserUpdate) -> User:
    changes = data.model_dump(exclude_unset=True)
    if not changes:
        return user
    user.sqlmodel_update(changes)
    user.updated_at = utcnow()
    session.add(user)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise Conflict(EMAIL_TAKEN) from None
    return user


def change_password(
    session: Session,
    *,
    user: User,
    current_password: str,
    new_password: str,
    client: ClientInfo,
    settings: Settings,
) -> AuthResponse:
    """A wrong current password is a 400 (a typo must not log the user out); success ends every session."""
    if user.password_hash is None:
        raise BadRequest(NO_PASSWORD)
    _end_read(session)
    if not verify_password(current_password, user.password_hash, rounds=settings.BCRYPT_ROUNDS):
        raise BadRequest(WRONG_CURRENT_PASSWORD)
    _set_password(session, user=user, password=new_password, settings=settings)
    pair = sessions.start_session(session, user=user, client=client, settings=settings)
    session.commit()
    audit("password_changed", user_id=user.id, via="change_password")
    return _auth_response(user, pair, message="Password changed")


def _set_password(session: Session, *, user: User, password: str, settings: Settings) -> None:
    """New hash; every session, token and outstanding reset link issued before now stops working."""
    now = utcnow()
    user.password_hash = hash_password(password, rounds=settings.BCRYPT_ROUNDS)
    user.updated_at = now
    sessions.end_all_sessions(session, user=user, now=now)
    sessions.void_reset_tokens(session, user=user, now=now)


def create_reset_token(session: Session, *, email: str, settings: Settings) -> str | None:
    """A single-use reset token for an account with a password, or None (the caller answers the same)."""
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
    session.commit()
    return token


def reset_password(session: Session, *, token: str, new_password: str, settings: Settings) -> None:
    now = utcnow()
    row = session.exec(
        select(PasswordResetToken, User)
        .join(User, col(User.id) == PasswordResetToken.user_id)
        .where(PasswordResetToken.token_hash == hash_token(token))
    ).first()
    if row is None or row[0].used_at is not None or row[0].expires_at <= now:
        raise BadRequest(INVALID_RESET)
    reset, user = row
    # Spend it in one conditional UPDATE: two racing uses cannot both succeed.
    spent = session.execute(
        update(PasswordResetToken)
        .where(col(PasswordResetToken.id) == reset.id, col(PasswordResetToken.used_at).is_(None))
        .values(used_at=now)
    )
    if spent.rowcount != 1:  # type: ignore[attr-defined]
        session.rollback()
        raise BadRequest(INVALID_RESET)
    _set_password(session, user=user, password=new_password, settings=settings)
    session.commit()
    audit("password_changed", user_id=user.id, via="reset_password")


def delete_account(session: Session, *, user: User, password: str | None, settings: Settings) -> None:
    """Delete the user with their tasks and sessions; a local account must confirm with its password."""
    _end_read(session)
    if user.password_hash is not None and (
        password is None or not verify_password(password, user.password_hash, rounds=settings.BCRYPT_ROUNDS)
    ):
        raise BadRequest(CONFIRM_WITH_PASSWORD)
    user_id = user.id
    session.execute(delete(User).where(col(User.id) == user_id))
    session.merge(DeletedUser(id=user_id, deleted_at=utcnow()))
    session.commit()
    session.expunge_all()


def logout(session: Session, *, principal: Principal, refresh_token: str | None) -> None:
    """End the session of the token used (a Better Auth token: that token alone), and a named one."""
    now = utcnow()
    session_ids = []
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
    session.commit()


def logout_all(session: Session, *, user: User) -> None:
    sessions.end_all_sessions(session, user=user)
    session.commit()


def shared_secret_claims(token: str, *, settings: Settings) -> dict[str, Any] | None:
    """The claims of a JWT naming HS256 (ours, or a frontend's), verified with the shared secret: signature and
    times, no I/O. None for the kinds that need Better Auth's keys or tables; Unauthorized for a bad token."""
    if token_kind(token) is not TokenKind.SHARED_SECRET:
        return None
    try:
        return decode_token(token, settings=settings)
    except InvalidToken as exc:
        raise _rejected(str(exc)) from None


def principal_from_token(
    session: Session, *, token: str, claims: dict[str, Any] | None, settings: Settings, better_auth: BetterAuth
) -> Principal:
    """The user a valid, unrevoked token speaks for; anything not provably valid is Unauthorized.

    `claims` are `shared_secret_claims(token)`, already verified. A JWT naming HS256 is judged with the shared
    secret only; any other JWT only against the frontend's JWKS; anything else is a Better Auth session token.
    Better Auth users all go through `_external_user`, whichever way they arrive.
    """
    if claims is None:
        claims = _better_auth_claims(session, token=token, kind=token_kind(token), better_auth=better_auth)
    elif claims.get("iss") == settings.JWT_ISSUER:
        return _local_principal(session, token=token, claims=claims)
    user = _external_user(session, token=token, claims=claims)
    return Principal(user_id=user.id, session_id=None, token=token, expires_at=_timestamp(claims.get("exp")))


_sessions = table(AuthSession).c
# Built once: this runs on every request with one of our tokens. A session row implies its user (deleting a user
# deletes its sessions).
_LIVE_SESSION = sa_select(_sessions.id).where(
    _sessions.id == bindparam("session_id"),
    _sessions.user_id == bindparam("user_id"),
    _sessions.revoked_at.is_(None),
)


LIVE_SESSION = _LIVE_SESSION.exists()
"""True while session `:session_id` of user `:user_id` is live: a statement reading the caller's rows checks the
caller's session itself with it (`OwnerScope`), one round trip instead of two."""


def _local_principal(session: Session, *, token: str, claims: dict[str, Any]) -> Principal:
    """One of ours: its session must be live (one small query: logout takes effect at once)."""
    session_id = claims.get("sid")
    if not isinstance(session_id, str):
        raise _rejected("no_session_id")
    user_id: str = claims["sub"]
    require_live_session(session.connection(), session_id=session_id, user_id=user_id)
    return Principal(user_id=user_id, session_id=session_id, token=token, expires_at=_timestamp(claims.get("exp")))


def require_live_session(connection: Connection, *, session_id: str, user_id: str) -> None:
    if connection.execute(_LIVE_SESSION, {"session_id": session_id, "user_id": user_id}).first() is None:
        raise _session_not_live()


def _session_not_live() -> Unauthorized:
    return _rejected("no_live_session")


def unproven_session(claims: dict[str, Any] | None, *, settings: Settings) -> str | None:
    """The session of one of our tokens (`claims` verified by `shared_secret_claims`): a statement can prove it live
    by itself (`OwnerScope`). None for any other token, which `principal_from_token` proves."""
    if claims is None or claims.get("iss") != settings.JWT_ISSUER:
        return None
    session_id = claims.get("sid")
    return session_id if isinstance(session_id, str) else None


@dataclass(frozen=True)
class OwnerScope:
    """Whose rows a route's statements may touch: `user_id`'s, and only while the caller is still signed in.

    With `session_id` None the caller is proven already. Otherwise the caller's token is one of ours whose session
    is not checked yet: the statement that reads checks it itself (`LIVE_SESSION` in its WHERE, executed with
    `params`), and a read that comes back empty must `prove()` the caller before answering, so that a revoked
    session is a 401, never an empty list or a 404.
    """

    user_id: str
    session_id: str | None = None

    @property
    def params(self) -> dict[str, Any]:
        """The bind parameters of `LIVE_SESSION` (statements name the owner `:user_id` too)."""
        return {"user_id": self.user_id, "session_id": self.session_id}

    def prove(self, connection: Connection) -> None:
        if self.session_id is not None:
            require_live_session(connection, session_id=self.session_id, user_id=self.user_id)

    @staticmethod
    def refused() -> Unauthorized:
        """The answer when a statement that can only have failed its session check (an insert) did nothing."""
        return _session_not_live()


def current_user(session: Session, principal: Principal) -> User:
    """The caller's account, for the routes that read or change it."""
    user = session.get(User, principal.user_id)
    if user is None:  # deleted since the token was checked
        raise _rejected("no_user")
    return user


def _rejected(reason: str, detail: str | None = None) -> Unauthorized:
    audit("token_rejected", reason=reason)
    return Unauthorized(detail)


def _timestamp(value: object) -> datetime | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, UTC)
    return None


def _issued_after(claims: dict[str, Any], instant: datetime | None) -> bool:
    """Whether the token was provably issued after the instant (whole-second `iat`: the same second is not)."""
    if instant is None:
        return True
    issued = _timestamp(claims.get("iat"))
    return issued is not None and issued > instant


def _external_user(session: Session, *, token: str, claims: dict[str, Any]) -> User:
    """A Better Auth user: refused if logged out, issued before logout-all, or deleted; else created/synced."""
    if session.get(RevokedToken, hash_token(token)) is not None:
        raise _rejected("logged_out")
    user_id = claims["sub"]
    user = session.get(User, user_id)
    if user is not None and not _issued_after(claims, user.tokens_valid_after):
        raise _rejected("issued_before_logout_all")
    if user is None:
        tombstone = session.get(DeletedUser, user_id)
        if tombstone is not None and not _issued_after(claims, tombstone.deleted_at):
            raise _rejected("account_deleted")
    return _sync_external_user(session, user=user, user_id=user_id, claims=claims)


def _better_auth_claims(session: Session, *, token: str, kind: TokenKind, better_auth: BetterAuth) -> dict[str, Any]:
    try:
        if kind is TokenKind.SESSION:
            return better_auth.session_claims(session, token)
        return better_auth.decode_jwt(token)
    except InvalidToken as exc:
        raise _rejected(f"{kind.value}: {exc}") from None


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
        with session.no_autoflush:  # look before the pending change reaches the unique index
            owner = session.exec(select(User.id).where(User.email == email)).first()
        if owner is not None and owner != user_id:
            session.rollback()
            raise _rejected("email_of_another_account", EMAIL_BELONGS_TO_ANOTHER)
    session.add(user)
    try:
        session.commit()
    except IntegrityError:
        # A concurrent first request for the same user won the insert, or another account took the email.
        session.rollback()
        existing = session.get(User, user_id)
        if existing is None or (email is not None and existing.email != email):
            raise _rejected("email_of_another_account", EMAIL_BELONGS_TO_ANOTHER) from None
        return existing
    return user
