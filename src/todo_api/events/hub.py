"""The open event streams of one process, and how they learn of changes.

The database is the source of truth: a stream holds only its position (the last event number it sent) and a flag;
when woken it reads the events after its position (`service.events_after`), so a stream's memory does not grow with
a slow client, and nothing is lost or sent twice. What wakes it:
- a transaction of this process that changed its user's tasks (`Database.committed`, after the commit);
- with Redis (REDIS_URL), the same from any other instance, through one pub/sub channel (the message is only the
  user's id: the events are read from the database);
- every EVENT_AUTH_CHECK_SECONDS, a check of every open stream: its token (expired, logged out: the stream ends with
  `event: auth`) and its user's last event number (heals a Redis message that never came).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import anyio.to_thread
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from todo_api.config import Settings
from todo_api.db import Database, utcnow
from todo_api.errors import TooManyRequests, is_database_unavailable
from todo_api.events import service
from todo_api.events.service import StreamAuth

logger = logging.getLogger(__name__)

CHANNEL = "todo-api:task-events"
PURGE_EVERY = 60.0  # seconds between deletions of old events, per process
REDIS_RETRY_SECONDS = 5.0
STREAMS_RETRY_AFTER = 5
"""Seconds a client over a stream limit is told to wait (Retry-After)."""


@dataclass(eq=False)
class Stream:
    """One open stream: whose, from where on, and why it must end (None while it may go on)."""

    auth: StreamAuth
    position: int
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    ended: str | None = None  # "expired", "revoked" (event: auth), "shutdown"

    @property
    def user_id(self) -> str:
        return self.auth.user_id

    def end(self, reason: str) -> None:
        if self.ended is None:
            self.ended = reason
        self.wake.set()


class Hub:
    def __init__(self, database: Database, settings: Settings) -> None:
        self.database = database
        self.settings = settings
        self.streams: dict[str, set[Stream]] = {}
        self.count = 0
        self.instance = secrets.token_hex(8)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._redis: Redis[bytes] | None = None
        self._pending: set[asyncio.Task[None]] = set()  # Redis publications under way
        self._publish_failed_at = float("-inf")
        self._closing = False

    # --- Streams ---

    def open(self, auth: StreamAuth, position: int) -> Stream:
        """A new stream, within EVENT_STREAMS_PER_USER and EVENT_STREAMS_MAX (else 429)."""
        if self._closing:
            raise TooManyRequests(STREAMS_RETRY_AFTER, limit="event_streams")
        mine = self.streams.setdefault(auth.user_id, set())
        if len(mine) >= self.settings.EVENT_STREAMS_PER_USER:
            raise TooManyRequests(STREAMS_RETRY_AFTER, limit="event_streams_per_user")
        if self.count >= self.settings.EVENT_STREAMS_MAX:
            raise TooManyRequests(STREAMS_RETRY_AFTER, limit="event_streams")
        stream = Stream(auth, position)
        mine.add(stream)
        self.count += 1
        return stream

    def close(self, stream: Stream) -> None:
        mine = self.streams.get(stream.user_id)
        if mine is not None and stream in mine:
            mine.discard(stream)
            self.count -= 1
            if not mine:
                del self.streams[stream.user_id]

    def _wake(self, user_ids: frozenset[str] | set[str]) -> None:
        for user_id in user_ids:
            for stream in self.streams.get(user_id, ()):
                stream.wake.set()

    # --- Changes: this process's commits, other instances' through Redis ---

    def committed(self, user_ids: frozenset[str]) -> None:
        """`Database.committed`: called in a worker thread after a commit that changed these users' tasks. Without
        Redis and without a stream of theirs here, nobody is told (a stream opening meanwhile catches up at the next
        check): waking the event loop for nothing costs a write a few percent of its CPU."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        if self._redis is None and not any(user_id in self.streams for user_id in user_ids):
            return
        loop.call_soon_threadsafe(self._changed, user_ids)

    def _changed(self, user_ids: frozenset[str]) -> None:
        self._wake(user_ids)
        if self._redis is not None:
            message = " ".join([self.instance, *sorted(user_ids)])
            task = asyncio.get_running_loop().create_task(self._publish(message))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def _publish(self, message: str) -> None:
        assert self._redis is not None
        try:
            await self._redis.publish(CHANNEL, message)
        except (RedisError, OSError) as exc:  # the other instances catch up at their next check
            now = asyncio.get_running_loop().time()
            if now - self._publish_failed_at >= REDIS_RETRY_SECONDS:  # one line, not one per write
                logger.warning("events: could not publish to Redis (%s)", type(exc).__name__)
                self._publish_failed_at = now

    async def _listen(self) -> None:
        """Wake this process's streams for changes made through other instances."""
        assert self._redis is not None
        while True:
            try:
                async with self._redis.pubsub() as pubsub:
                    await pubsub.subscribe(CHANNEL)
                    async for message in pubsub.listen():
                        if message.get("type") != "message":
                            continue
                        data = message["data"]
                        instance, *user_ids = (data.decode() if isinstance(data, bytes) else str(data)).split()
                        if instance != self.instance:
                            self._wake(set(user_ids))
            except (RedisError, OSError) as exc:
                logger.warning("events: Redis subscription lost (%s); retrying", type(exc).__name__)
                await asyncio.sleep(REDIS_RETRY_SECONDS)

    # --- The periodic check ---

    async def _check(self) -> None:
        """Every EVENT_AUTH_CHECK_SECONDS: end streams whose token no longer holds, wake those behind their user's
        last event, and now and then delete old events."""
        purged_at = 0.0
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.settings.EVENT_AUTH_CHECK_SECONDS)
            now = utcnow()
            streams = []
            for stream in [stream for mine in self.streams.values() for stream in mine if stream.ended is None]:
                if stream.auth.expires_at is not None and stream.auth.expires_at <= now:
                    stream.end("expired")  # known without the database
                else:
                    streams.append(stream)
            purge = loop.time() - purged_at >= PURGE_EVERY
            if not streams and not purge:
                continue
            try:
                reasons, last = await anyio.to_thread.run_sync(self._read_state, streams, purge)
            except Exception as exc:  # never stop checking: a stream whose token died must still end
                if isinstance(exc, DBAPIError | PoolTimeoutError) and is_database_unavailable(exc):
                    logger.warning("events: database unavailable, open streams not checked (%s)", type(exc).__name__)
                else:
                    logger.exception("events: checking open streams failed")
                continue
            if purge:
                purged_at = loop.time()
            for stream, reason in zip(streams, reasons, strict=True):
                if reason is not None:
                    stream.end(reason)
                elif last.get(stream.user_id, 0) > stream.position:
                    stream.wake.set()

    def _read_state(self, streams: list[Stream], purge: bool) -> tuple[list[str | None], dict[str, int]]:
        with self.database.transaction() if purge else self.database.read() as conn:
            if purge:
                service.purge(conn, older_than=utcnow() - timedelta(seconds=self.settings.EVENT_RETENTION))
            reasons = service.ended(conn, [stream.auth for stream in streams], utcnow()) if streams else []
            last = service.latest(conn, {stream.user_id for stream in streams})
        return reasons, last

    # --- Lifetime ---

    def shut_down(self) -> None:
        """End every stream now (a deploy: clients reconnect elsewhere)."""
        self._closing = True
        for mine in self.streams.values():
            for stream in mine:
                stream.end("shutdown")

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        self._loop = asyncio.get_running_loop()
        self.database.committed = self.committed
        url = self.settings.redis_url
        async with AsyncExitStack() as stack:
            if url:
                self._redis = Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
                stack.push_async_callback(self._redis.aclose)  # type: ignore[attr-defined]
            tasks = [asyncio.create_task(self._check())]
            if self._redis is not None:
                tasks.append(asyncio.create_task(self._listen()))
            restore = _on_shutdown_signal(
                lambda: self._loop.call_soon_threadsafe(self.shut_down) if self._loop else None
            )
            try:
                yield
            finally:
                restore()
                self.shut_down()
                self.database.committed = None
                for task in tasks:
                    task.cancel()
                for task in tasks:
                    with suppress(asyncio.CancelledError):
                        await task


def _on_shutdown_signal(callback: Callable[[], Any]) -> Callable[[], None]:
    """Run `callback` too when the server is told to stop (SIGTERM, SIGINT), before it waits for open connections:
    a stream never ends by itself. Only the main thread can handle signals (the served app's: uvicorn's)."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}

    def handler(sig: int, frame: Any) -> None:
        callback()
        earlier = previous[signal.Signals(sig)]
        if callable(earlier):
            earlier(sig, frame)

    for sig in previous:
        signal.signal(sig, handler)

    def restore() -> None:
        for sig, earlier in previous.items():
            if signal.getsignal(sig) is handler:
                signal.signal(sig, earlier)

    return restore


@contextmanager
def publisher(settings: Settings) -> Iterator[Callable[[frozenset[str]], None]]:
    """For a process that serves no streams (`todo-api worker`): a `Database.committed` that tells the other
    instances through Redis (when there is one; they catch up at their next check otherwise)."""
    url = settings.redis_url
    if not url:
        yield lambda user_ids: None
        return
    from redis import Redis as SyncRedis

    client: SyncRedis[bytes] = SyncRedis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
    instance = secrets.token_hex(8)
    failed_at = float("-inf")

    def publish(user_ids: frozenset[str]) -> None:
        nonlocal failed_at
        try:
            client.publish(CHANNEL, " ".join([instance, *sorted(user_ids)]))
        except (RedisError, OSError) as exc:
            now = time.monotonic()
            if now - failed_at >= REDIS_RETRY_SECONDS:
                logger.warning("events: could not publish to Redis (%s)", type(exc).__name__)
                failed_at = now

    try:
        yield publish
    finally:
        client.close()
