"""Safe retries: a write sent again with the same `Idempotency-Key` gets the first answer, not a second effect.

The key is remembered per user for 24 hours together with a fingerprint of the request and the response. The
write and the key are committed in one transaction, so a retry either finds both or neither; two concurrent
requests with one key are decided by the primary key (the loser's write is rolled back and it replays).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Annotated

from fastapi import Header, Response
from pydantic import BaseModel
from sqlalchemy import Column, Connection, ForeignKey, String, Text, bindparam
from sqlalchemy import select as sa_select
from sqlalchemy.exc import IntegrityError
from sqlmodel import Field, SQLModel

from todo_api.auth.principal import OwnerScope, scoped
from todo_api.db import UTCDateTime, table, utcnow
from todo_api.errors import UnprocessableEntity
from todo_api.responses import json_response, task_headers

KEY_LIFETIME = timedelta(hours=24)
_PRINTABLE = re.compile(r"[\x20-\x7e]{1,255}")
KEY_REUSED = "This Idempotency-Key was already used with a different request"
BAD_KEY = "Idempotency-Key must be 1-255 printable ASCII characters"


class IdempotencyRecord(SQLModel, table=True):
    __tablename__ = "idempotency_keys"

    user_id: str = Field(sa_column=Column(String(255), ForeignKey("users.id", ondelete="CASCADE"), primary_key=True))
    key: str = Field(sa_column=Column(String(255), primary_key=True))
    fingerprint: str = Field(max_length=64)
    status_code: int
    response_body: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, index=True)


def _valid_key(value: str | None) -> str | None:
    if value is not None and not _PRINTABLE.fullmatch(value):
        raise UnprocessableEntity(BAD_KEY)
    return value


IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description="Retry-safe key (1-255 printable characters): the same key and body return the first result",
    ),
]


def _fingerprint(operation: str, data: BaseModel) -> str:
    parts = (operation, data.model_dump(mode="json"))
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


_KEYS = table(IdempotencyRecord)
_FIND = scoped(
    sa_select(_KEYS.c.fingerprint, _KEYS.c.status_code, _KEYS.c.response_body).where(
        _KEYS.c.user_id == bindparam("owner_id"),
        _KEYS.c.key == bindparam("key"),
        _KEYS.c.created_at > bindparam("since"),
    )
)
_FORGET_EXPIRED = _KEYS.delete().where(
    _KEYS.c.user_id == bindparam("owner_id"), _KEYS.c.created_at <= bindparam("since")
)
_REMEMBER = _KEYS.insert()


def _replay(connection: Connection, *, scope: OwnerScope, key: str, request_fingerprint: str) -> Response | None:
    """The first answer to this key, as it was sent (a task's with its ETag), or None."""
    record = scope.first(connection, _FIND, {"key": key, "since": utcnow() - KEY_LIFETIME})
    if record is None:
        return None
    if record.fingerprint != request_fingerprint:
        raise UnprocessableEntity(KEY_REUSED)
    body = record.response_body
    version = json.loads(body).get("version") if body.startswith("{") else None
    headers = task_headers(version) if isinstance(version, int) else None
    return json_response(body.encode(), status_code=record.status_code, headers=headers)


def run_once(
    connection: Connection,
    *,
    scope: OwnerScope,
    key: str | None,
    request: tuple[str, BaseModel],
    answer: Callable[[], Response],
) -> Response:
    """`answer()`, the write and its response, or, for a key already used with the same request, the first response.

    The write and the key are stored in one savepoint of the route's transaction: of two concurrent requests with one
    key, the loser's write is undone there when the key's primary key refuses it, and it replays the winner's answer.
    """
    key = _valid_key(key)
    if key is None:
        return answer()
    owner_id = scope.user_id
    request_fingerprint = _fingerprint(*request)
    replayed = _replay(connection, scope=scope, key=key, request_fingerprint=request_fingerprint)
    if replayed is not None:
        return replayed
    try:
        with connection.begin_nested():
            response = answer()
            connection.execute(_FORGET_EXPIRED, {"owner_id": owner_id, "since": utcnow() - KEY_LIFETIME})
            record = {"user_id": owner_id, "key": key, "fingerprint": request_fingerprint, "created_at": utcnow()}
            body = bytes(response.body).decode()
            connection.execute(_REMEMBER, {**record, "status_code": response.status_code, "response_body": body})
    except IntegrityError:
        # A concurrent request with the same key committed first: ours is undone, theirs is the answer.
        replayed = _replay(connection, scope=scope, key=key, request_fingerprint=request_fingerprint)
        if replayed is None:
            raise
        return replayed
    return response
