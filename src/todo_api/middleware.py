"""The outermost layer of every request: request id, security headers, one access-log line and metrics."""

from __future__ import annotations

import logging
import random
import re
import time
from typing import Any

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from todo_api.config import Settings
from todo_api.errors import HeaderFieldsTooLarge, PayloadTooLarge, send_error
from todo_api.metrics import get_metrics

access_log = logging.getLogger("todo_api.access")

REQUEST_ID_HEADER = "X-Request-ID"
MAX_HEADER_BYTES = 32 * 1024  # all request headers together, as nginx's default large_client_header_buffers
_VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")
UNMATCHED_ROUTE = "<unmatched>"


def _request_id(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            candidate: str = value.decode("latin-1")
            if _VALID_REQUEST_ID.fullmatch(candidate):
                return candidate
            break
    # Unique, not secret: 128 random bits from Python's generator, as uuid4().hex would show them. uuid4() reads
    # os.urandom, which lets go of the GIL, and the event loop then waits for a busy worker thread to hand it back.
    return f"{random.getrandbits(128):032x}"


def _cache_control(path: str, status: int) -> str | None:
    if status == 401 or path.startswith("/api/auth/"):
        return "no-store"
    if path.startswith("/api/") and ("/tasks" in path or path.endswith("/stats") or "/tags" in path):
        return "private, no-cache"  # revalidate with the ETag, never share between users
    return None


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.hsts = f"max-age={settings.HSTS_SECONDS}; includeSubDomains" if settings.HSTS_SECONDS > 0 else None
        self.metrics = get_metrics() if settings.METRICS_ENABLED else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = _request_id(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = MutableHeaders(scope=message)
                headers[REQUEST_ID_HEADER] = request_id
                headers["X-Content-Type-Options"] = "nosniff"
                headers["Referrer-Policy"] = "no-referrer"
                if self.hsts:
                    headers["Strict-Transport-Security"] = self.hsts
                cache_control = _cache_control(scope["path"], status)
                if cache_control:
                    headers["Cache-Control"] = cache_control
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            self._record(scope, status, time.perf_counter() - started)

    def _record(self, scope: Scope, status: int, seconds: float) -> None:
        route: Any = scope.get("route")
        state = scope.get("state", {})
        # The route's path template (no ids), or what a route named its request (an MCP call: its tool).
        template = state.get("route_label") or getattr(route, "path", None) or UNMATCHED_ROUTE
        if access_log.isEnabledFor(logging.INFO):
            fields: dict[str, Any] = {
                "method": scope["method"],
                "path": template,
                "status": status,
                "duration_ms": round(seconds * 1000, 2),
                "request_id": state.get("request_id"),
            }
            if state.get("user_id"):
                fields["user_id"] = state["user_id"]
            access_log.info("request", extra=fields)
        if self.metrics is not None:
            self.metrics.requests.labels(scope["method"], template, str(status)).inc()
            self.metrics.duration.labels(template).observe(seconds)


class InputLimitMiddleware:
    """413 for bodies over MAX_BODY_BYTES before they are read whole (declared or chunked); 431 for huge headers."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header_bytes = 0
        declared = 0
        for name, value in scope["headers"]:
            header_bytes += len(name) + len(value)
            if name == b"content-length" and value.isdigit():
                declared = int(value)
        if header_bytes > MAX_HEADER_BYTES:
            await send_error(send, HeaderFieldsTooLarge())
            return
        if declared > self.max_body_bytes:
            await send_error(send, PayloadTooLarge())
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    # Raised inside FastAPI's body reading, which re-raises it (an HTTPException) to the handler.
                    raise PayloadTooLarge()
            return message

        await self.app(scope, counting_receive, send)
