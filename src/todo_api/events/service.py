"""Reading a user's events, stream tickets, and whether an open stream's token still holds: every statement of the
live changes (the events themselves are written by triggers, see `events.models`)."""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, bindparam, delete, insert, select

from todo_api.auth.models import AuthSession, RevokedToken, User
from todo_api.auth.principal import Principal
from todo_api.db import table, utcnow
from todo_api.events.models import EventCounter, StreamTicket, TaskEvent
from todo_api.security import hash_token

TICKET_LIFETIME = timedelta(seconds=60)
EVENTS = table(TaskEvent).c
COUNTERS = table(EventCounter).c
TICKETS = table(StreamTicket)
SESSIONS = table(AuthSession).c
REVOKED = table(RevokedToken).c
USERS = table(User).c


@dataclass
class StreamAuth:
    """What an open stream keeps checking: our token's session, or a Better Auth token's hash and issue time (logout,
    logout-all, account deletion), and when the token expires."""

    user_id: str
    session_id: str | None
    token_hash: str | None
    issued_at: datetime | None
    expires_at: datetime | None

    @classmethod
    def of(cls, principal: Principal) -> StreamAuth:
        token_hash = None if principal.session_id is not None else hash_token(principal.token)
        return cls(principal.user_id, principal.session_id, token_hash, principal.issued_at, principal.expires_at)


# --- Events ---

_AFTER = (
    select(EVENTS.seq, EVENTS.type, EVENTS.data)
    .where(EVENTS.user_id == bindparam("user_id"), EVENTS.seq > bindparam("after"))
    .order_by(EVENTS.seq)
    .limit(bindparam("limit"))
)
_OLDEST = select(EVENTS.seq).where(EVENTS.user_id == bindparam("user_id")).order_by(EVENTS.seq).limit(1)
_LATEST = select(COUNTERS.user_id, COUNTERS.seq).where(COUNTERS.user_id.in_(bindparam("user_ids", expanding=True)))


def events_after(conn: Connection, *, user_id: str, after: int, limit: int) -> list[tuple[int, str, str]]:
    """The user's events numbered after `after`, oldest first: (seq, type, data)."""
    rows = conn.execute(_AFTER, {"user_id": user_id, "after": after, "limit": limit})
    return [(int(seq), type_, data) for seq, type_, data in rows]


def latest(conn: Connection, user_ids: Iterable[str]) -> dict[str, int]:
    """Each user's last event number (0: none yet)."""
    ids = sorted(set(user_ids))
    found = {user_id: int(seq) for user_id, seq in conn.execute(_LATEST, {"user_ids": ids})} if ids else {}
    return {user_id: found.get(user_id, 0) for user_id in ids}


def start(conn: Connection, *, user_id: str, since: int | None) -> tuple[int, bool]:
    """Where a stream starts: after `since` (None: after the latest event), and whether events after `since` were
    deleted already (EVENT_RETENTION): the client must reload (`resync`), and the stream goes on from the latest."""
    last = latest(conn, [user_id])[user_id]
    if since is None or since >= last:
        return (last if since is None else since), False
    oldest = conn.execute(_OLDEST, {"user_id": user_id}).scalar()
    if oldest is None or oldest > since + 1:
        return last, True
    return since, False


def purge(conn: Connection, *, older_than: datetime) -> None:
    """Delete events older than the retention and tickets past their time."""
    conn.execute(delete(TaskEvent).where(EVENTS.created_at < older_than))
    conn.execute(delete(StreamTicket).where(TICKETS.c.expires_at < utcnow()))


# --- Tickets ---

_REDEEM = (
    delete(TICKETS)
    .where(TICKETS.c.ticket_hash == bindparam("ticket_hash"), TICKETS.c.expires_at > bindparam("now"))
    .returning(
        TICKETS.c.user_id,
        TICKETS.c.session_id,
        TICKETS.c.token_hash,
        TICKETS.c.token_issued_at,
        TICKETS.c.token_expires_at,
    )
)


def issue_ticket(conn: Connection, principal: Principal) -> str:
    """A single-use ticket for the caller's events stream, valid `TICKET_LIFETIME` (stored as its hash)."""
    ticket = secrets.token_urlsafe(32)
    auth = StreamAuth.of(principal)
    conn.execute(
        insert(TICKETS).values(
            ticket_hash=hash_token(ticket),
            user_id=auth.user_id,
            session_id=auth.session_id,
            token_hash=auth.token_hash,
            token_issued_at=auth.issued_at,
            token_expires_at=auth.expires_at,
            expires_at=utcnow() + TICKET_LIFETIME,
        )
    )
    return ticket


def redeem_ticket(conn: Connection, ticket: str) -> StreamAuth | None:
    """The auth a ticket stands for, once: redeeming deletes it. None for an unknown, used or expired ticket."""
    row = conn.execute(_REDEEM, {"ticket_hash": hash_token(ticket), "now": utcnow()}).first()
    return None if row is None else StreamAuth(*row)


# --- Open streams' tokens ---

_LIVE_SESSIONS = select(SESSIONS.id).where(
    SESSIONS.id.in_(bindparam("ids", expanding=True)), SESSIONS.revoked_at.is_(None)
)
_REVOKED = select(REVOKED.token_hash).where(REVOKED.token_hash.in_(bindparam("hashes", expanding=True)))
_USERS = select(USERS.id, USERS.tokens_valid_after).where(USERS.id.in_(bindparam("ids", expanding=True)))


def ended(conn: Connection, auths: Sequence[StreamAuth], now: datetime) -> list[str | None]:
    """For each stream's auth, why it no longer holds ("expired", "revoked") or None: at most three statements for
    all of a process's streams."""
    sessions = {auth.session_id for auth in auths if auth.session_id is not None}
    hashes = {auth.token_hash for auth in auths if auth.token_hash is not None}
    external = {auth.user_id for auth in auths if auth.session_id is None}
    live = set(conn.execute(_LIVE_SESSIONS, {"ids": sorted(sessions)}).scalars()) if sessions else set()
    revoked = set(conn.execute(_REVOKED, {"hashes": sorted(hashes)}).scalars()) if hashes else set()
    users = dict(conn.execute(_USERS, {"ids": sorted(external)}).all()) if external else {}
    reasons: list[str | None] = []
    for auth in auths:
        if auth.expires_at is not None and auth.expires_at <= now:
            reasons.append("expired")
        elif auth.session_id is not None:
            reasons.append(None if auth.session_id in live else "revoked")
        elif auth.token_hash in revoked or auth.user_id not in users:
            reasons.append("revoked")
        else:
            valid_after = users[auth.user_id]
            issued = auth.issued_at
            stale = valid_after is not None and (issued is None or issued <= valid_after)
            reasons.append("revoked" if stale else None)
    return reasons
