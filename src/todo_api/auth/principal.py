"""Who a request speaks for: a bearer token proven into a `Principal`, and the `OwnerScope` that every statement over
a user's rows runs through, so that a logged-out token is a 401 wherever it is used.

Tokens: a JWT naming HS256 is judged with the shared secret only (ours when its `iss` is ours, else a frontend's);
any other JWT only against the frontend's JWKS; anything else is a Better Auth session token. Ours carry `sid`, a
session here that must still be live; Better Auth's users are created or synced on first use.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Delete,
    Executable,
    Insert,
    Row,
    Select,
    Table,
    Update,
    bindparam,
    insert,
)
from sqlalchemy import select as sa_select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from todo_api.auth.better_auth import BetterAuth, TokenKind, token_kind
from todo_api.auth.models import AuthSession, DeletedUser, RevokedToken, User
from todo_api.config import Settings
from todo_api.db import changed, orm, table, utcnow
from todo_api.errors import Unauthorized
from todo_api.logs import audit
from todo_api.security import InvalidToken, decode_token, hash_token, timestamp

EMAIL_BELONGS_TO_ANOTHER = "The email in this token belongs to another account"


@dataclass(frozen=True)
class Principal:
    """Who a request speaks for, and how it proved it."""

    user_id: str
    session_id: str | None  # our tokens are bound to a session; Better Auth's are not
    token: str
    expires_at: datetime | None
    issued_at: datetime | None = None


def rejected(reason: str, detail: str | None = None) -> Unauthorized:
    """The 401 for a token that is not provably valid; the reason goes to the audit log, never to the client."""
    audit("token_rejected", reason=reason)
    return Unauthorized(detail)


# --- The live-session check, for our own tokens ---

_SESSIONS = table(AuthSession).c
# A session row implies its user (deleting a user deletes its sessions).
_LIVE_SESSION = sa_select(_SESSIONS.id).where(
    _SESSIONS.id == bindparam("session_id"),
    _SESSIONS.user_id == bindparam("owner_id"),
    _SESSIONS.revoked_at.is_(None),
)
LIVE_SESSION = _LIVE_SESSION.exists()
"""True while session `:session_id` of user `:owner_id` is live: an owner-scoped statement checks the caller's session
itself with it (`Scoped`), one round trip instead of two."""


def require_live_session(connection: Connection, *, session_id: str, user_id: str) -> None:
    if connection.execute(_LIVE_SESSION, {"session_id": session_id, "owner_id": user_id}).first() is None:
        raise rejected("no_live_session")


def shared_secret_claims(token: str, *, settings: Settings) -> dict[str, Any] | None:
    """The claims of a JWT naming HS256 (ours, or a frontend's), verified with the shared secret: signature and
    times, no I/O. None for the kinds that need Better Auth's keys or tables; Unauthorized for a bad token."""
    if token_kind(token) is not TokenKind.SHARED_SECRET:
        return None
    try:
        return decode_token(token, settings=settings)
    except InvalidToken as exc:
        raise rejected(str(exc)) from None


def unproven_session(claims: dict[str, Any] | None, *, settings: Settings) -> str | None:
    """The session of one of our tokens (`claims` verified by `shared_secret_claims`), which a statement can prove
    live by itself (`OwnerScope`). None for any other token, which `principal_from_token` proves."""
    if claims is None or claims.get("iss") != settings.JWT_ISSUER:
        return None
    session_id = claims.get("sid")
    return session_id if isinstance(session_id, str) else None


def principal_from_token(
    connection: Connection,
    *,
    token: str,
    claims: dict[str, Any] | None,
    settings: Settings,
    better_auth: BetterAuth,
) -> Principal:
    """The user a valid, unrevoked token speaks for; anything not provably valid is Unauthorized. `claims` are
    `shared_secret_claims(token)`, already verified."""
    if claims is not None and claims.get("iss") == settings.JWT_ISSUER:
        session_id = claims.get("sid")
        if not isinstance(session_id, str):
            raise rejected("no_session_id")
        require_live_session(connection, session_id=session_id, user_id=claims["sub"])
        return Principal(claims["sub"], session_id, token, timestamp(claims.get("exp")), timestamp(claims.get("iat")))
    if claims is None:
        claims = _better_auth_claims(connection, token=token, better_auth=better_auth)
    with orm(connection) as session:
        user = _external_user(session, token=token, claims=claims)
    return Principal(user.id, None, token, timestamp(claims.get("exp")), timestamp(claims.get("iat")))


def current_user(connection: Connection, principal: Principal) -> User:
    """The caller's account (detached, fully loaded), for the routes that read or change it."""
    with orm(connection) as session:
        user = session.get(User, principal.user_id)
    if user is None:  # deleted since the token was checked
        raise rejected("no_user")
    return user


# --- Every statement over one owner's rows ---


@dataclass(frozen=True)
class Scoped:
    """An owner-scoped statement, built once in two forms: `plain` (the caller is proven already) and `checked`,
    which also proves the caller's session itself (`LIVE_SESSION` in its WHERE). Both name the owner `:owner_id` (not
    `:user_id`: an UPDATE would take a parameter named after a column for a value to SET).
    Run it only through `OwnerScope.rows`."""

    plain: Executable
    checked: Executable


def scoped(statement: Select[*tuple[Any, ...]] | Update | Delete) -> Scoped:
    """`statement` (a SELECT, UPDATE or DELETE over the owner's rows, RETURNING or not) in its two forms."""
    return Scoped(statement, statement.where(LIVE_SESSION))


def scoped_insert(into: Table, values: Select[Any], returning: Sequence[ColumnElement[Any]]) -> Scoped:
    """INSERT INTO `into` SELECT `values` (bind parameters named after their columns) RETURNING `returning`; checked,
    the values are selected only while the caller's session is live, so nothing inserted means a 401."""
    columns = [column.name for column in values.selected_columns]

    def build(select: Select[Any]) -> Insert:
        return insert(into).from_select(columns, select).returning(*returning)

    return Scoped(build(values), build(values.where(LIVE_SESSION)))


@dataclass
class OwnerScope:
    """Whose rows a request may touch: `user_id`'s, and only while the caller is still signed in.

    `session_id` is the caller's session while it is still to be proven (one of our tokens): the first statement
    proves it (`Scoped.checked`) and later ones need not. A statement that matched nothing proves the caller
    before it answers, so a revoked session is a 401, never an empty list or a 404.
    """

    user_id: str
    session_id: str | None = None

    def rows(self, connection: Connection, statement: Scoped, params: Mapping[str, Any]) -> Sequence[Row[Any]]:
        """Every row `statement` returns for this owner; an empty result only once the caller is proven."""
        if statement.plain.is_dml:
            changed(connection, self.user_id)
        if self.session_id is None:
            return connection.execute(statement.plain, {**params, "owner_id": self.user_id}).all()
        bound = {**params, "owner_id": self.user_id, "session_id": self.session_id}
        rows = connection.execute(statement.checked, bound).all()
        if not rows:
            require_live_session(connection, session_id=self.session_id, user_id=self.user_id)
        self.session_id = None  # proven, by the rows or by the check
        return rows

    def first(self, connection: Connection, statement: Scoped, params: Mapping[str, Any]) -> Row[Any] | None:
        rows = self.rows(connection, statement, params)
        return rows[0] if rows else None


# --- Better Auth's users ---


def _better_auth_claims(connection: Connection, *, token: str, better_auth: BetterAuth) -> dict[str, Any]:
    kind = token_kind(token)
    try:
        if kind is TokenKind.SESSION:
            return better_auth.session_claims(connection, token)
        return better_auth.decode_jwt(token)
    except InvalidToken as exc:
        raise rejected(f"{kind.value}: {exc}") from None


def _issued_after(claims: dict[str, Any], instant: datetime | None) -> bool:
    """Whether the token was provably issued after the instant (whole-second `iat`: the same second is not)."""
    if instant is None:
        return True
    issued = timestamp(claims.get("iat"))
    return issued is not None and issued > instant


def _external_user(session: Session, *, token: str, claims: dict[str, Any]) -> User:
    """A Better Auth user: refused if logged out, issued before logout-all, or deleted; else created or synced."""
    if session.get(RevokedToken, hash_token(token)) is not None:
        raise rejected("logged_out")
    user_id = claims["sub"]
    user = session.get(User, user_id)
    if user is not None and not _issued_after(claims, user.tokens_valid_after):
        raise rejected("issued_before_logout_all")
    if user is None:
        tombstone = session.get(DeletedUser, user_id)
        if tombstone is not None and not _issued_after(claims, tombstone.deleted_at):
            raise rejected("account_deleted")
        return _create_external_user(session, user_id=user_id, claims=claims)
    return _sync_external_user(session, user=user, claims=claims)


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


def _email_taken(session: Session, *, email: str | None, user_id: str) -> bool:
    if email is None:
        return False
    owner = session.exec(select(User.id).where(User.email == email)).first()
    return owner is not None and owner != user_id


def _create_external_user(session: Session, *, user_id: str, claims: dict[str, Any]) -> User:
    """Insert the user unless a unique key is taken (a concurrent first request made it, or another account has the
    email): never merge accounts. One statement that cannot fail on a conflict, so no transaction is spoiled."""
    email = _claim_email(claims)
    if _email_taken(session, email=email, user_id=user_id):
        raise rejected("email_of_another_account", EMAIL_BELONGS_TO_ANOTHER)
    user = User(id=user_id, email=email, name=_claim_name(claims) or "")
    dialect = postgresql if session.connection().dialect.name == "postgresql" else sqlite
    session.execute(dialect.insert(table(User)).values(user.model_dump()).on_conflict_do_nothing())
    stored = session.get(User, user_id)
    if stored is None or stored.email != email:
        raise rejected("email_of_another_account", EMAIL_BELONGS_TO_ANOTHER)
    return stored


def _sync_external_user(session: Session, *, user: User, claims: dict[str, Any]) -> User:
    """Keep a Better Auth user's name and email current."""
    email, name = _claim_email(claims), _claim_name(claims)
    if (email is None or email == user.email) and (name is None or name == user.name):
        return user
    if _email_taken(session, email=email, user_id=user.id):
        raise rejected("email_of_another_account", EMAIL_BELONGS_TO_ANOTHER)
    user.email = email or user.email
    user.name = name or user.name
    user.updated_at = utcnow()
    try:
        session.flush()
    except IntegrityError:  # another account took the email meanwhile; the 401 rolls the block back
        raise rejected("email_of_another_account", EMAIL_BELONGS_TO_ANOTHER) from None
    return user
