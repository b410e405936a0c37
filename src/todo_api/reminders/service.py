"""The reminder routes' work, always within one owner's `OwnerScope`: push subscriptions and the in-app feed.
Another user's subscription or notification is indistinguishable from none (404)."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import BindParameter, Connection, Row, String, bindparam, delete, func, update
from sqlalchemy import select as sa_select

from todo_api.auth.models import User
from todo_api.auth.principal import OwnerScope, scoped, scoped_insert
from todo_api.config import Settings
from todo_api.db import UTCDateTime, table, utcnow
from todo_api.errors import Conflict, NotFound, UnprocessableEntity
from todo_api.reminders.models import (
    MAX_SUBSCRIPTIONS,
    Notification,
    NotificationQuery,
    PushSubscription,
    PushSubscriptionIn,
)
from todo_api.reminders.push import EndpointRefused, check_endpoint

SUBSCRIPTION_NOT_FOUND = "Push subscription not found"
NOTIFICATION_NOT_FOUND = "Notification not found"
TOO_MANY_SUBSCRIPTIONS = f"at most {MAX_SUBSCRIPTIONS} push subscriptions per user; delete one first"
MAX_ID = 2**63 - 1

SUBSCRIPTIONS = table(PushSubscription)
NOTIFICATIONS = table(Notification)
_OWNER: BindParameter[str] = bindparam("owner_id", type_=String())
_NOW = bindparam("now", type_=UTCDateTime())

SUBSCRIPTION_COLUMNS = (
    SUBSCRIPTIONS.c.id,
    SUBSCRIPTIONS.c.endpoint,
    SUBSCRIPTIONS.c.created_at,
    SUBSCRIPTIONS.c.updated_at,
)
NOTIFICATION_COLUMNS = tuple(
    NOTIFICATIONS.c[name]
    for name in ("id", "type", "task_id", "reminder_id", "title", "due_date", "fire_at", "created_at", "read_at")
)

_MINE = SUBSCRIPTIONS.c.user_id == _OWNER
LIST_SUBSCRIPTIONS = scoped(sa_select(*SUBSCRIPTION_COLUMNS).where(_MINE).order_by(SUBSCRIPTIONS.c.id))
# The same endpoint again updates its keys (a browser that subscribed anew); otherwise a new row while the user has
# fewer than MAX_SUBSCRIPTIONS (counted in the same statement; the user's row is locked first on PostgreSQL).
UPDATE_SUBSCRIPTION = scoped(
    update(SUBSCRIPTIONS)
    .where(_MINE, SUBSCRIPTIONS.c.endpoint == bindparam("sub_endpoint"))
    .values(p256dh=bindparam("new_p256dh"), auth=bindparam("new_auth"), updated_at=_NOW)
    .returning(*SUBSCRIPTION_COLUMNS)
)
_COUNT_MINE = sa_select(func.count()).select_from(SUBSCRIPTIONS).where(_MINE).scalar_subquery()
_NEW_SUBSCRIPTION: tuple[Any, ...] = (
    _OWNER.label("user_id"),
    bindparam("endpoint", type_=String()).label("endpoint"),
    bindparam("p256dh", type_=String()).label("p256dh"),
    bindparam("auth", type_=String()).label("auth"),
    _NOW.label("created_at"),
    _NOW.label("updated_at"),
)
INSERT_SUBSCRIPTION = scoped_insert(
    SUBSCRIPTIONS, sa_select(*_NEW_SUBSCRIPTION).where(_COUNT_MINE < MAX_SUBSCRIPTIONS), returning=SUBSCRIPTION_COLUMNS
)
DELETE_SUBSCRIPTION = scoped(
    delete(SUBSCRIPTIONS).where(_MINE, SUBSCRIPTIONS.c.id == bindparam("row_id")).returning(SUBSCRIPTIONS.c.id)
)
USERS = table(User)
LOCK_USER = scoped(sa_select(USERS.c.id).where(USERS.c.id == _OWNER).with_for_update())

_NOTIFICATIONS_MINE = NOTIFICATIONS.c.user_id == _OWNER
_UNREAD = NOTIFICATIONS.c.read_at.is_(None)


def _feed(unread: bool) -> tuple[Any, ...]:
    return (_NOTIFICATIONS_MINE, _UNREAD) if unread else (_NOTIFICATIONS_MINE,)


FEED_PAGE = {
    unread: scoped(
        sa_select(*NOTIFICATION_COLUMNS)
        .where(*_feed(unread))
        .order_by(NOTIFICATIONS.c.id.desc())
        .limit(bindparam("limit"))
        .offset(bindparam("offset"))
    )
    for unread in (False, True)
}
FEED_TOTAL = {
    unread: scoped(sa_select(func.count()).select_from(NOTIFICATIONS).where(*_feed(unread))) for unread in (False, True)
}
READ_ONE = scoped(
    update(NOTIFICATIONS)
    .where(_NOTIFICATIONS_MINE, NOTIFICATIONS.c.id == bindparam("row_id"))
    .values(read_at=func.coalesce(NOTIFICATIONS.c.read_at, _NOW))
    .returning(*NOTIFICATION_COLUMNS)
)
READ_ALL = scoped(
    update(NOTIFICATIONS).where(_NOTIFICATIONS_MINE, _UNREAD).values(read_at=_NOW).returning(NOTIFICATIONS.c.id)
)


def _id(value: int) -> int:
    return value if 0 < value <= MAX_ID else 0


# --- Push subscriptions ---


def _key(value: str, name: str, size: int) -> bytes:
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        raise UnprocessableEntity(f"keys.{name} must be base64url") from None
    if len(raw) != size:
        raise UnprocessableEntity(f"keys.{name} must be {size} bytes")
    return raw


def subscribe(
    conn: Connection, *, scope: OwnerScope, data: PushSubscriptionIn, settings: Settings
) -> tuple[Row[Any], bool]:
    """Record the browser's subscription (or update the one with the same endpoint): (its row, whether it is new).
    The endpoint is checked as a send would check it (422 if the server may not contact it). The user's row stays
    locked until the transaction ends, so the count of the INSERT stays exact."""
    scope.rows(conn, LOCK_USER, {})  # proves the caller before anything else; one subscriber at a time per user
    p256dh = _key(data.keys.p256dh, "p256dh", 65)
    try:
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), p256dh)
    except ValueError:
        raise UnprocessableEntity("keys.p256dh is not a P-256 public key") from None
    _key(data.keys.auth, "auth", 16)
    try:
        check_endpoint(data.endpoint, allow_private=settings.PUSH_ALLOW_PRIVATE_ENDPOINTS)
    except EndpointRefused as exc:
        raise UnprocessableEntity(str(exc)) from None
    now = utcnow()
    keys = {"p256dh": data.keys.p256dh, "auth": data.keys.auth}
    row = scope.first(
        conn,
        UPDATE_SUBSCRIPTION,
        {"sub_endpoint": data.endpoint, "new_p256dh": keys["p256dh"], "new_auth": keys["auth"], "now": now},
    )
    if row is not None:
        return row, False
    row = scope.first(conn, INSERT_SUBSCRIPTION, {"endpoint": data.endpoint, **keys, "now": now})
    if row is None:
        raise Conflict(TOO_MANY_SUBSCRIPTIONS)
    return row, True


def subscriptions(conn: Connection, *, scope: OwnerScope) -> Sequence[Row[Any]]:
    return scope.rows(conn, LIST_SUBSCRIPTIONS, {})


def unsubscribe(conn: Connection, *, scope: OwnerScope, subscription_id: int) -> None:
    if not scope.rows(conn, DELETE_SUBSCRIPTION, {"row_id": _id(subscription_id)}):
        raise NotFound(SUBSCRIPTION_NOT_FOUND)


# --- The in-app feed ---


def notifications(conn: Connection, *, scope: OwnerScope, query: NotificationQuery) -> tuple[Sequence[Row[Any]], int]:
    """A page of the owner's notifications, newest first, and how many there are."""
    unread = bool(query.unread)
    page = scope.rows(conn, FEED_PAGE[unread], {"limit": query.limit, "offset": query.offset})
    if query.offset == 0 and len(page) < query.limit:
        return page, len(page)
    total = scope.rows(conn, FEED_TOTAL[unread], {})
    return page, int(total[0][0])


def read(conn: Connection, *, scope: OwnerScope, notification_id: int) -> Row[Any]:
    row = scope.first(conn, READ_ONE, {"row_id": _id(notification_id), "now": utcnow()})
    if row is None:
        raise NotFound(NOTIFICATION_NOT_FOUND)
    return row


def read_all(conn: Connection, *, scope: OwnerScope) -> None:
    scope.rows(conn, READ_ALL, {"now": utcnow()})
