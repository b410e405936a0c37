"""Builds the FastAPI application: routers, middleware and the error handlers. No I/O at import."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import lru_cache

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from todo_api import __version__, system
from todo_api.auth.better_auth import BetterAuth
from todo_api.auth.router import router as auth_router
from todo_api.config import Settings, get_settings
from todo_api.db import build_engine
from todo_api.errors import install_error_handlers
from todo_api.tasks.router import router as tasks_router

EXPOSED_HEADERS = ["X-Total-Count", "Link", "ETag"]


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    logging.basicConfig(level=settings.LOG_LEVEL.upper(), format="%(levelname)s %(name)s: %(message)s")
    engine = build_engine(settings)
    better_auth = BetterAuth.from_settings(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        engine.dispose()
        better_auth.close()

    app = FastAPI(
        title="Todo API",
        version=__version__,
        description="Accounts, Better Auth tokens and per-user todo tasks.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.better_auth = better_auth
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.CORS_ORIGINS,
        allow_credentials=True,
        allow_methods=["*"],
        allow_headers=["*"],
        expose_headers=EXPOSED_HEADERS,
    )
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
