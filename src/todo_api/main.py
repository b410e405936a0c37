"""Builds the FastAPI application: routers, middleware and the error handlers. No I/O at import."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import lru_cache

import anyio
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from todo_api import __version__, system
from todo_api.auth.router import router as auth_router
from todo_api.config import Settings, get_settings
from todo_api.db import build_engine
from todo_api.errors import install_error_handlers
from todo_api.tasks.router import router as tasks_router

EXPOSED_HEADERS = ["X-Total-Count", "Link", "ETag"]


class RequestLimit:
    """Lets at most `limit` requests into the app at once; the others wait here, holding no thread or connection.

    A request keeps its database connection across several thread-pool hops (dependencies, endpoint, response
    validation). With more requests in flight than the pool has connections, threads block waiting for a
    connection while the requests holding the connections wait for a thread, and nothing moves until the pool
    gives up (30 s, then 503s). Admitting no more requests than there are connections rules that out.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.slots = anyio.Semaphore(limit, fast_acquire=True)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # /health never touches the database, so it never waits: a busy service still answers its liveness probe.
        if scope["type"] != "http" or scope["path"] == "/health":
            await self.app(scope, receive, send)
            return
        async with self.slots:
            await self.app(scope, receive, send)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    logging.basicConfig(level=settings.LOG_LEVEL.upper(), format="%(levelname)s %(name)s: %(message)s")
    engine = build_engine(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        engine.dispose()

    app = FastAPI(
        title="Todo API",
        version=__version__,
        description="Accounts, Better Auth tokens and per-user todo tasks.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.CORS_ORIGINS,
        allow_credentials=True,
        allow_methods=["*"],
        allow_headers=["*"],
        expose_headers=EXPOSED_HEADERS,
    )
    app.add_middleware(RequestLimit, limit=settings.DB_POOL_SIZE + settings.DB_MAX_OVERFLOW)
    install_error_handlers(app)
    app.include_router(system.router)
    app.include_router(auth_router)
    app.include_router(tasks_router)
    return app


@lru_cache
def _default_app() -> FastAPI:
    return create_app()


def __getattr__(name: str) -> FastAPI:
    # `todo_api.main:app` is built on first access (by uvicorn), not at import.
    if name == "app":
        return _default_app()
    raise AttributeError(name)
