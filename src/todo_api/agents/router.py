"""The MCP server's HTTP side: `POST /mcp` (Streamable HTTP, stateless, JSON answers) and the RFC 9728 document that
tells an MCP client where to log in.

Before the SDK sees a request, the route refuses a browser origin we do not serve (403), proves the bearer token as
every REST route does (401 with a `WWW-Authenticate` naming the metadata document) and counts it against
`RATE_LIMIT_MCP` (429). The body is read here, within MAX_BODY_BYTES (413), and handed to the SDK as read. Tools
find the caller in the request's state (`tools.caller`). Stateless: any instance answers any request.
"""

from __future__ import annotations

import json
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.concurrency import run_in_threadpool
from mcp.server.mcpserver import MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from starlette.types import Message, Receive, Scope, Send

from todo_api.auth.deps import Caller, get_caller
from todo_api.config import Settings
from todo_api.db import Database
from todo_api.errors import Forbidden, Unauthorized
from todo_api.ratelimit import RateLimiter

PATH = "/mcp"
METADATA_PATH = "/.well-known/oauth-protected-resource"
ORIGIN_NOT_ALLOWED = "Origin not allowed"

router = APIRouter(include_in_schema=False)


@asynccontextmanager
async def serving(server: MCPServer) -> Any:
    """Runs the SDK's request handling for the app's lifetime (a fresh session manager each time the app starts)."""
    # DNS rebinding is refused by the Origin check of `_browser_origin` (a rebound page's Origin is its own name);
    # the SDK's Host list would refuse every name a proxy or a test client uses.
    server.streamable_http_app(
        stateless_http=True,
        json_response=True,
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
    )
    async with server.session_manager.run():
        yield


def _base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def _challenge(request: Request, detail: str) -> Unauthorized:
    """A 401 that tells an MCP client where to read how to log in (RFC 9728 section 5.1)."""
    error = Unauthorized(detail)
    error.headers["WWW-Authenticate"] = f'Bearer resource_metadata="{_base_url(request)}{METADATA_PATH}"'
    return error


async def _browser_origin(request: Request) -> None:
    """A request from a browser page (it sends `Origin`) is served only for the frontends' origins."""
    origin = request.headers.get("origin")
    settings: Settings = request.app.state.settings
    if origin is not None and origin not in settings.CORS_ORIGINS and origin not in settings.MCP_ALLOWED_ORIGINS:
        raise Forbidden(ORIGIN_NOT_ALLOWED)


async def _agent(request: Request) -> Caller:
    """The bearer token, checked as far as it can be without I/O."""
    try:
        return await get_caller(request)
    except Unauthorized as exc:
        raise _challenge(request, exc.detail) from None


def _admit(request: Request, caller: Caller) -> None:
    """Prove the caller (a revoked session is refused here, before any tool runs) and count the call, per user."""
    database: Database = request.app.state.database
    try:
        with database.read() as conn:
            user_id = caller.principal(conn).user_id
    except Unauthorized as exc:
        raise _challenge(request, exc.detail) from None
    limiter: RateLimiter = request.app.state.rate_limiter
    limiter.hit(request.app.state.settings.RATE_LIMIT_MCP, "rate_limit_mcp", user_id)


def _label(body: bytes, tools: frozenset[str]) -> str:
    """What the call is, for the access log and the metrics: the JSON-RPC method and a known tool's name."""
    try:
        message = json.loads(body)
    except ValueError:
        return f"{PATH} <invalid>"
    if not isinstance(message, dict) or not isinstance(message.get("method"), str):
        return f"{PATH} <invalid>"
    method: str = message["method"]
    if method == "tools/call":
        params = message.get("params")
        name = params.get("name") if isinstance(params, dict) else None
        return f"{PATH} tools/call {name if name in tools else '<unknown>'}"
    return f"{PATH} {method}" if len(method) <= 64 and method.isprintable() else f"{PATH} <invalid>"


class _Delegated(Response):
    """The SDK's answer to a request whose body was read already."""

    def __init__(self, server: MCPServer, body: bytes) -> None:
        super().__init__()
        self.server = server
        self.request_body = body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        pending = [self.request_body]

        async def replay() -> Message:
            if pending:
                return {"type": "http.request", "body": pending.pop(), "more_body": False}
            return await receive()

        await self.server.session_manager.handle_request(scope, replay, send)


@router.post(PATH, dependencies=[Depends(_browser_origin)])
async def mcp(request: Request, caller: Annotated[Caller, Depends(_agent)]) -> Response:
    body = await request.body()
    server: MCPServer = request.app.state.mcp
    request.state.route_label = _label(body, request.app.state.mcp_tools)
    await run_in_threadpool(_admit, request, caller)
    request.state.agent = caller
    return _Delegated(server, body)


def _metadata(request: Request) -> dict[str, Any]:
    settings: Settings = request.app.state.settings
    base = _base_url(request)
    return {
        "resource": f"{base}{PATH}",
        "authorization_servers": settings.mcp_authorization_servers,
        "bearer_methods_supported": ["header"],
        "resource_name": "Todo API",
        "resource_documentation": f"{base}/docs" if settings.docs_enabled else None,
    }


@router.get(METADATA_PATH)
async def protected_resource(request: Request) -> dict[str, Any]:
    """RFC 9728: the resource's metadata (its `authorization_servers` are where an MCP client logs in)."""
    return {key: value for key, value in _metadata(request).items() if value is not None}


@router.get(METADATA_PATH + PATH)
async def protected_resource_mcp(request: Request) -> dict[str, Any]:
    """The same document at the path RFC 9728 derives from the resource's URL (`/mcp`)."""
    return await protected_resource(request)
