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
from typing import Annotated, Any

from fastapi import Header
from sqlalchemy import Column, ForeignKey, String, Text, delete
from sqlalchemy.exc import IntegrityError
from sqlmodel import Field, Session, SQLModel, col, select

from todo_api.db import UTCDateTime, utcnow
from todo_api.errors import UnprocessableEntity

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


def fingerprint(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _replay(record: IdempotencyRecord, request_fingerprint: str) -> tuple[int, Any]:
    if record.fingerprint != request_fingerprint:
        raise UnprocessableEntity(KEY_REUSED)
    return record.status_code, json.loads(record.response_body)


def _find(session: Session, *, owner_id: str, key: str) -> IdempotencyRecord | None:
    return session.exec(
        select(IdempotencyRecord).where(
            IdempotencyRecord.user_id == owner_id,
            IdempotencyRecord.key == key,
            col(IdempotencyRecord.created_at) > utcnow() - KEY_LIFETIME,
        )
    ).first()


def run_once(
    session: Session,
    *,
    owner_id: str,
    key: str | None,
    request_fingerprint: str,
    status_code: int,
    write: Callable[[], Any],
    render: Callable[[Any], Any],
) -> tuple[int, Any]:
    """Run `write` (which must not commit) and commit it with the key, or replay the answer stored for the key.

    Returns the status code and JSON body to answer with: the first answer's, for a retry.
    """
    key = _valid_key(key)
    if key is not None and (record := _find(session, owner_id=owner_id, key=key)) is not None:
        return _replay(record, request_fingerprint)
    body = render(write())
    if key is not None:
        # An expired record of the same key is replaced; old ones go opportunistically.
        session.execute(
            delete(IdempotencyRecord).where(
                col(IdempotencyRecord.created_at) <= utcnow() - KEY_LIFETIME,
                col(IdempotencyRecord.user_id) == owner_id,
            )
        )
        session.add(
            IdempotencyRecord(
                user_id=owner_id,
                key=key,
                fingerprint=request_fingerprint,
                status_code=status_code,
                response_body=json.dumps(body),
            )
        )
    try:
        session.commit()
    except IntegrityError:
        # A concurrent request with the same key committed first: ours is undone, theirs is the answer.
        session.rollback()
        record = _find(session, owner_id=owner_id, key=key) if key is not None else None
        if record is None:
            raise
        return _replay(record, request_fingerprint)
    return status_code, body
