"""Builds the FastAPI application: routers, middleware and the error handlers. No I/O at import."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from functools import lru_cache

import anyio
import anyio.to_thread
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.routing import APIRoute

from todo_api import __version__, system
from todo_api.agents import router as agents
from todo_api.agents.tools import TOOLS, build_server
from todo_api.auth.better_auth import BetterAuth
from todo_api.auth.router import router as auth_router
from todo_api.config import Settings, get_settings
from todo_api.db import Database, build_engine, pool_capacity
from todo_api.errors import install_error_handlers
from todo_api.events.hub import Hub
from todo_api.events.router import router as events_router
from todo_api.logs import configure_logging
from todo_api.metrics import get_metrics
from todo_api.middleware import REQUEST_ID_HEADER, InputLimitMiddleware, RequestContextMiddleware
from todo_api.ratelimit import RateLimiter
from todo_api.reminders.push import application_server_key, load_vapid_key
from todo_api.reminders.router import router as reminders_router
from todo_api.reminders.scheduler import Scheduler
from todo_api.tasks.router import router as tasks_router

EXPOSED_HEADERS = ["X-Total-Count", "Link", "ETag", REQUEST_ID_HEADER]


def _operation_id(route: APIRoute) -> str:
    # Stable, readable operationIds (`list_tasks`, `create_task`): the handler names, unique in this app.
    return route.name


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    configure_logging(settings.LOG_LEVEL, settings.log_format)
    engine = build_engine(settings)
    better_auth = BetterAuth.from_settings(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # As many threads as connections (see `Database`): a thread never waits in the pool's queue, where a thread
        # that just started can take a returned connection before one that has waited (seconds, at 256
        # connections); requests wait in anyio's first-come-first-served limiter instead, in the event loop. And
        # no more: one process runs Python on one core at a time, and every extra thread busy at once only adds
        # GIL hand-offs (48 busy threads cost a third more CPU per request than 12).
        threads = anyio.to_thread.current_default_thread_limiter()
        threads.total_tokens = pool_capacity(settings)
        async with AsyncExitStack() as stack:
            await stack.enter_async_context(app.state.events.running())
            if settings.REMINDERS_ENABLED:
                # Its own engine: its connection is never one a request's thread waits for (`Database`).
                database = Database(build_engine(settings), settings)
                scheduler = Scheduler(database, settings, busy=lambda: threads.borrowed_tokens > 0)
                scheduler.database.committed = app.state.events.committed  # reminder events wake streams
                scheduler.start()
                stack.push_async_callback(scheduler.aclose)
            if settings.MCP_ENABLED:
                await stack.enter_async_context(agents.serving(app.state.mcp))
            yield
        engine.dispose()
        better_auth.close()

    docs = settings.docs_enabled
    app = FastAPI(
        title="Todo API",
        version=__version__,
        description="Accounts, Better Auth tokens and per-user todo tasks.",
        lifespan=lifespan,
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
        openapi_url="/openapi.json" if docs else None,
        generate_unique_id_function=_operation_id,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.database = Database(engine, settings)
    app.state.password_hashing_slots = anyio.Semaphore(settings.password_hash_concurrency)
    app.state.rate_limiter = RateLimiter(settings)
    app.state.better_auth = better_auth
    app.state.events = Hub(app.state.database, settings)
    app.state.push_public_key = (
        application_server_key(load_vapid_key(settings.VAPID_PRIVATE_KEY)) if settings.push_enabled else None
    )
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.CORS_ORIGINS,
        allow_credentials=True,
        allow_methods=["*"],
        allow_headers=["*"],
        expose_headers=EXPOSED_HEADERS,
    )
    app.add_middleware(InputLimitMiddleware, max_body_bytes=settings.MAX_BODY_BYTES)
    # Outermost, so CORS preflights and refused input get the security headers and a log line too.
    app.add_middleware(RequestContextMiddleware, settings=settings)
    install_error_handlers(app)
    # The task routes first: FastAPI tries routes in order, and each one that fails to match costs a request as
    # much as a tenth of a task read. The order changes no answer, as no path of the other routers can match a task
    # route (`/api/{user_id}/tasks...`, `/api/{user_id}/stats`); a test holds that.
    app.include_router(tasks_router)
    app.include_router(system.router)
    app.include_router(auth_router)
    app.include_router(events_router)
    app.include_router(reminders_router)
    if settings.MCP_ENABLED:
        app.state.mcp = build_server(log_level="DEBUG" if settings.LOG_LEVEL.upper() == "DEBUG" else "WARNING")
        app.state.mcp_tools = frozenset(TOOLS)
        app.include_router(agents.router)
    if settings.METRICS_ENABLED:
        metrics = get_metrics()
        metrics.multiproc_dir = settings.PROMETHEUS_MULTIPROC_DIR
        metrics.track_pool(engine)
        app.include_router(system.metrics_router)
    return app


@lru_cache
def _default_app() -> FastAPI:
    return create_app()


def __getattr__(name: str) -> FastAPI:
    # `todo_api.main:app` is built on first access (by uvicorn), not at import.
    if name == "app":
        return _default_app()
    raise AttributeError(name)
