"""Live changes: `GET /api/{user_id}/events` (Server-Sent Events, or JSON for clients that poll) and
`POST /api/auth/stream-ticket` (for `EventSource`, which cannot send a bearer token)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Header, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from pydantic import BaseModel
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from todo_api.auth.deps import TASK_NOT_FOUND, Caller, get_caller
from todo_api.auth.principal import rejected
from todo_api.db import Database, DatabaseDep, utcnow
from todo_api.errors import NotFound, Unauthorized, UnprocessableEntity, error_responses, is_database_unavailable
from todo_api.events import service
from todo_api.events.hub import Hub, Stream
from todo_api.events.service import StreamAuth
from todo_api.responses import json_response

logger = logging.getLogger(__name__)
router = APIRouter(tags=["events"])
BATCH = 500
"""Events read at a time."""
BEHIND_LIMIT = 10_000
"""A stream this many events behind its user's last one (a client too slow to keep up) gets `resync` and is closed:
the client reloads the list instead of the backlog."""
RETRY_MS = 3000
MAX_EVENT_ID = 2**63 - 1
"""Event numbers are BIGINT: a larger one is no event id (a 422, not a database error)."""
JSON_LIMIT = 1000
STREAM_HEADERS = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}


class StreamTicketPublic(BaseModel):
    ticket: str
    expires_in: int


@router.post(
    "/api/auth/stream-ticket",
    response_model=StreamTicketPublic,
    status_code=status.HTTP_201_CREATED,
    responses=error_responses(401, 503),
)
def stream_ticket(db: DatabaseDep, caller: Annotated[Caller, Depends(get_caller)]) -> Response:
    """A single-use ticket for `GET /api/{user_id}/events?ticket=...`, valid 60 seconds, bound to the caller and
    their session: for `EventSource`, which cannot send `Authorization` (a long-lived token must not go in a URL)."""
    with db.transaction() as conn:
        ticket = service.issue_ticket(conn, caller.principal(conn))
    body = StreamTicketPublic(ticket=ticket, expires_in=int(service.TICKET_LIFETIME.total_seconds()))
    return json_response(body, status_code=status.HTTP_201_CREATED)


def _prove(
    database: Database, caller: Caller | None, ticket: str | None, since: int | None
) -> tuple[StreamAuth, int, bool]:
    with database.transaction() as conn:
        if ticket is not None:
            auth = service.redeem_ticket(conn, ticket)
            if auth is None:
                raise rejected("stream_ticket")
            if service.ended(conn, [auth], utcnow())[0] is not None:  # its token was logged out since
                raise rejected("stream_ticket_token")
        elif caller is not None:
            auth = StreamAuth.of(caller.principal(conn))
        else:
            raise Unauthorized("Not authenticated")
        position, resync = service.start(conn, user_id=auth.user_id, since=since)
    return auth, position, resync


def _since(last_event_id: str | None, since: int | None) -> int | None:
    value = last_event_id if last_event_id is not None else since
    if value is None:
        return None
    try:
        number = int(value)
    except ValueError:
        raise UnprocessableEntity("Last-Event-ID must be an event id (a whole number)") from None
    if not 0 <= number <= MAX_EVENT_ID:
        raise UnprocessableEntity("Last-Event-ID must be an event id (a whole number)")
    return number


async def _caller(request: Request) -> Caller | None:
    """The bearer token, if there is one (a ticket may stand for it instead)."""
    if not request.headers.get("authorization"):
        return None
    return await get_caller(request)


def _sse(event: str, data: str, event_id: int | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {data}\n\n"


async def _stream(hub: Hub, database: Database, stream: Stream, resync: bool) -> AsyncIterator[str]:
    try:
        yield f"retry: {RETRY_MS}\n\n"
        if resync:
            yield _sse("resync", json.dumps({"last_event_id": stream.position}), stream.position)
        heartbeat = hub.settings.EVENT_HEARTBEAT_SECONDS
        while True:
            stream.wake.clear()
            try:
                batch = await run_in_threadpool(_read, database, stream)
            except (DBAPIError, PoolTimeoutError) as exc:
                if not is_database_unavailable(exc):
                    raise
                # The stream ends; the client reconnects with its Last-Event-ID (a 503 while the database is down).
                logger.warning("events: database unavailable, closing a stream (%s)", type(exc).__name__)
                return
            for seq, type_, data in batch:
                yield _sse(type_, data, seq)
                stream.position = seq
            if stream.ended is not None:
                if stream.ended in {"expired", "revoked"}:
                    yield _sse("auth", json.dumps({"reason": stream.ended}))
                elif stream.ended == "behind":
                    yield _sse("resync", json.dumps({"last_event_id": stream.position}), stream.position)
                return
            if len(batch) == BATCH:
                continue
            try:
                await asyncio.wait_for(stream.wake.wait(), heartbeat)
            except TimeoutError:
                yield ": keepalive\n\n"
    finally:
        hub.close(stream)


def _read(database: Database, stream: Stream) -> list[tuple[int, str, str]]:
    """The stream's next events; a stream too far behind instead ends, moved to its user's last event (`resync`)."""
    with database.read() as conn:
        rows = service.events_after(conn, user_id=stream.user_id, after=stream.position, limit=BATCH)
        if len(rows) == BATCH:
            last = service.latest(conn, [stream.user_id])[stream.user_id]
            if last - stream.position > BEHIND_LIMIT:
                stream.position = last
                stream.end("behind")
                return []
    return rows


@router.get(
    "/api/{user_id}/events",
    responses={
        status.HTTP_200_OK: {"content": {"text/event-stream": {}}, "description": "The event stream"},
        **error_responses(401, 404, 422, 429, 503),
    },
)
async def events(
    request: Request,
    db: DatabaseDep,
    user_id: str,
    caller: Annotated[Caller | None, Depends(_caller)],
    ticket: Annotated[
        str | None, Query(max_length=200, description="A stream ticket instead of a bearer token")
    ] = None,
    since: Annotated[
        int | None, Query(ge=0, le=MAX_EVENT_ID, description="Events after this id (as Last-Event-ID)")
    ] = None,
    format: Annotated[Literal["sse", "json"], Query(description="json: the events after `since` as an array")] = "sse",
    last_event_id: Annotated[str | None, Header(max_length=20)] = None,
) -> Response:
    """Every change to the caller's tasks, as it commits: `task.created`, `task.updated`, `task.completed`,
    `task.reopened`, `task.trashed`, `task.restored`, `task.deleted`; `id` is the caller's event number. With
    `Last-Event-ID` (or `since`), first every event after it. `event: resync` means events were missed (older than
    the retention, or the client fell too far behind): reload the list. `event: auth` ends a stream whose token was
    logged out or expired."""
    hub: Hub = request.app.state.events
    after = _since(last_event_id, since)
    auth, position, resync = await run_in_threadpool(_prove, db, caller, ticket, after)
    if user_id not in {"me", auth.user_id}:
        raise NotFound(TASK_NOT_FOUND)
    request.state.user_id = auth.user_id
    if format == "json":
        return await run_in_threadpool(_events_json, db, auth.user_id, position, resync)
    stream = hub.open(auth, position)
    return StreamingResponse(_stream(hub, db, stream, resync), media_type="text/event-stream", headers=STREAM_HEADERS)


def _events_json(database: Database, user_id: str, position: int, resync: bool) -> Response:
    with database.read() as conn:
        rows = service.events_after(conn, user_id=user_id, after=position, limit=JSON_LIMIT)
    events = [{"id": position, "event": "resync", "data": None}] if resync else []
    events += [{"id": int(seq), "event": type_, "data": json.loads(data)} for seq, type_, data in rows]
    return json_response(events, headers={"Cache-Control": "no-store"})
