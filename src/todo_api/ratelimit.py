"""Rate limits in the `limits` notation, counted in Redis (shared) or memory, and the client IP they key on."""

from __future__ import annotations

import ipaddress
import logging
import math
import time
from collections.abc import Callable
from functools import lru_cache

from fastapi import Request
from limits import RateLimitItem, parse
from limits.errors import StorageError
from limits.storage import MemoryStorage, RedisStorage, Storage
from limits.strategies import MovingWindowRateLimiter
from redis.exceptions import RedisError

from todo_api.config import Settings
from todo_api.errors import TooManyRequests as TooManyRequests  # re-exported: `from todo_api.ratelimit import ...`

logger = logging.getLogger(__name__)

REDIS_RETRY_SECONDS = 30.0
REDIS_TIMEOUT_SECONDS = 0.5


@lru_cache(maxsize=64)
def _parse(limit: str) -> RateLimitItem:
    return parse(limit)


class RateLimiter:
    """Moving-window limits; Redis when configured, falling back to memory (logged) while Redis is down."""

    def __init__(self, settings: Settings) -> None:
        self.enabled = settings.RATE_LIMIT_ENABLED
        self._memory = MovingWindowRateLimiter(MemoryStorage())
        self._redis: MovingWindowRateLimiter | None = None
        self._redis_down_until = 0.0
        url = settings.RATE_LIMIT_STORAGE_URL
        if url.startswith(("redis://", "rediss://", "redis+unix://")):
            storage: Storage = RedisStorage(
                url,
                key_prefix=settings.RATE_LIMIT_KEY_PREFIX,
                wrap_exceptions=True,
                socket_timeout=REDIS_TIMEOUT_SECONDS,
                socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
            )
            self._redis = MovingWindowRateLimiter(storage)

    def _run(self, operation: Callable[[MovingWindowRateLimiter], bool]) -> bool:
        if self._redis is not None and time.monotonic() >= self._redis_down_until:
            try:
                return operation(self._redis)
            except (StorageError, RedisError, OSError) as exc:
                self._redis_down_until = time.monotonic() + REDIS_RETRY_SECONDS
                logger.warning("rate-limit storage unreachable (%s): counting in memory", type(exc).__name__)
        return operation(self._memory)

    def _retry_after(self, item: RateLimitItem, keys: tuple[str, ...]) -> int:
        resets: list[float] = []

        def window_reset(limiter: MovingWindowRateLimiter) -> bool:
            resets.append(limiter.get_window_stats(item, *keys).reset_time)
            return True

        self._run(window_reset)
        reset = resets[-1] if resets else time.time() + item.get_expiry()
        return max(1, math.ceil(reset - time.time()))

    def hit(self, limit: str, *keys: str) -> None:
        """Count one request; over the limit -> 429."""
        if not self.enabled:
            return
        item = _parse(limit)
        if not self._run(lambda limiter: limiter.hit(item, *keys)):
            raise TooManyRequests(self._retry_after(item, keys), limit=keys[0])

    def check(self, limit: str, *keys: str) -> None:
        """429 if the limit is already used up, without counting this request."""
        if not self.enabled:
            return
        item = _parse(limit)
        if not self._run(lambda limiter: limiter.test(item, *keys)):
            raise TooManyRequests(self._retry_after(item, keys), limit=keys[0])

    def record(self, limit: str, *keys: str) -> None:
        """Count an event (a failed login) without refusing this request."""
        if self.enabled:
            item = _parse(limit)
            self._run(lambda limiter: limiter.hit(item, *keys))


def client_ip(request: Request) -> str:
    """The socket peer, unless it is a trusted proxy: then the right-most untrusted X-Forwarded-For address."""
    peer = request.client.host if request.client else ""
    trusted = _networks(tuple(request.app.state.settings.TRUSTED_PROXIES))
    if not trusted or not _is_trusted(peer, trusted):
        return peer
    forwarded = ",".join(request.headers.getlist("x-forwarded-for"))
    for candidate in reversed([part.strip() for part in forwarded.split(",") if part.strip()]):
        if not _is_trusted(candidate, trusted):
            return candidate
    return peer


@lru_cache(maxsize=8)
def _networks(entries: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(entry, strict=False) for entry in entries)


def _is_trusted(address: str, trusted: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted)


def rate_limit(setting: str) -> Callable[[Request], None]:
    """A route dependency counting one request per client IP against the named setting.

    A plain `def`, unlike our other dependencies, and so a thread-pool hop of its own: counting may be network I/O,
    as the `limits` library's Redis storage is synchronous, and in `async def` it would block the event loop. It
    stays a `def` until that I/O moves off the loop. The hop is paid only on the rate-limited auth routes, where
    bcrypt (register, login, token, reset-password), an email (forgot-password) or a write transaction (refresh)
    costs far more than it.
    """

    def dependency(request: Request) -> None:
        limiter: RateLimiter = request.app.state.rate_limiter
        limiter.hit(getattr(request.app.state.settings, setting), setting.lower(), client_ip(request))

    return dependency
