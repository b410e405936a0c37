"""Service-level routes: the root document and health checks."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from todo_api import __version__

router = APIRouter(tags=["system"])


@router.get("/")
def root() -> dict[str, str]:
    return {"name": "Todo API", "version": __version__, "docs": "/docs"}


@router.get("/health")
def health() -> dict[str, str]:
    """Liveness: the process answers. Never touches the database."""
    return {"status": "healthy"}


@router.get("/health/ready", responses={503: {"description": "The database does not answer"}})
def ready(request: Request) -> Any:
    """Readiness: the database answers a trivial query."""
    try:
        # A raw pooled connection: no transaction, so it never waits on another connection's write lock.
        connection = request.app.state.engine.raw_connection()
        try:
            cursor = connection.cursor()
            cursor.execute("SELECT 1")
            cursor.close()
        finally:
            connection.close()
    except Exception:  # any failure to reach the database (DBAPI errors come unwrapped here) means not ready
        return JSONResponse({"detail": "Database unavailable"}, status_code=503, headers={"Retry-After": "5"})
    return {"status": "ready", "database": "ok"}
