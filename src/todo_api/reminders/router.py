"""Reminder routes: the VAPID public key, a user's push subscriptions and in-app feed (docs/api.md#reminders)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response, status
from pydantic_core import to_json
from sqlalchemy import Row

from todo_api.auth.deps import PathOwner
from todo_api.db import DatabaseDep
from todo_api.errors import NotFound, error_responses
from todo_api.headers import page_headers
from todo_api.reminders import service
from todo_api.reminders.models import (
    NotificationPublic,
    NotificationQuery,
    PushPublicKey,
    PushSubscriptionIn,
    PushSubscriptionPublic,
)
from todo_api.responses import json_response

PUSH_NOT_CONFIGURED = "Web Push is not configured on this server"

router = APIRouter(tags=["reminders"])
owned = APIRouter(prefix="/api/{user_id}", tags=["reminders"], responses=error_responses(401, 404, 422, 503))


def _objects(rows: Any) -> bytes:
    return to_json([row._asdict() for row in rows])


def _object(row: Row[Any]) -> bytes:
    return to_json(row._asdict())


@router.get("/api/push/public-key", response_model=PushPublicKey, responses=error_responses(404))
def push_public_key(request: Request) -> Response:
    """The key a browser subscribes with (`PushManager.subscribe({applicationServerKey})`); 404 when push is not
    configured."""
    key: str | None = request.app.state.push_public_key
    if key is None:
        raise NotFound(PUSH_NOT_CONFIGURED)
    return json_response({"public_key": key}, headers={"Cache-Control": "public, max-age=3600"})


@owned.post(
    "/push-subscriptions",
    response_model=PushSubscriptionPublic,
    status_code=status.HTTP_201_CREATED,
    responses=error_responses(409),
)
def subscribe(request: Request, db: DatabaseDep, owner: PathOwner, data: PushSubscriptionIn) -> Response:
    """The browser's `PushSubscription.toJSON()`: 201 for a new one, 200 when that endpoint was already there (its
    keys are updated). At most 10 a user (409)."""
    with db.transaction() as conn:
        row, new = service.subscribe(conn, scope=owner.scope(conn), data=data, settings=request.app.state.settings)
    return json_response(_object(row), status_code=status.HTTP_201_CREATED if new else status.HTTP_200_OK)


@owned.get("/push-subscriptions", response_model=list[PushSubscriptionPublic])
def list_subscriptions(db: DatabaseDep, owner: PathOwner) -> Response:
    with db.read() as conn:
        rows = service.subscriptions(conn, scope=owner.scope(conn))
    return json_response(_objects(rows))


@owned.delete("/push-subscriptions/{subscription_id}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response)
def unsubscribe(db: DatabaseDep, owner: PathOwner, subscription_id: int) -> Response:
    with db.transaction() as conn:
        service.unsubscribe(conn, scope=owner.scope(conn), subscription_id=subscription_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@owned.get("/notifications", response_model=list[NotificationPublic])
def list_notifications(
    request: Request, db: DatabaseDep, owner: PathOwner, query: Annotated[NotificationQuery, Query()]
) -> Response:
    """The in-app feed, newest first (`unread=true`: only unread). `X-Total-Count` and `Link` as on the task list."""
    with db.read() as conn:
        page, total = service.notifications(conn, scope=owner.scope(conn), query=query)
    headers = page_headers(request.url, offset=query.offset, limit=query.limit, total=total)
    return json_response(_objects(page), headers=headers)


@owned.post("/notifications/read-all", status_code=status.HTTP_204_NO_CONTENT, response_class=Response)
def read_all(db: DatabaseDep, owner: PathOwner) -> Response:
    with db.transaction() as conn:
        service.read_all(conn, scope=owner.scope(conn))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@owned.post("/notifications/{notification_id}/read", response_model=NotificationPublic)
def read(db: DatabaseDep, owner: PathOwner, notification_id: int) -> Response:
    """Mark one read (again: it keeps its first read_at)."""
    with db.transaction() as conn:
        row = service.read(conn, scope=owner.scope(conn), notification_id=notification_id)
    return json_response(_object(row))


router.include_router(owned)
