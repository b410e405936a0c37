"""Service-level routes: the root document and health checks."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from todo_api import __version__
from todo_api.errors import ServiceUnavailable, error_response, error_responses
from todo_api.metrics import get_metrics

router = APIRouter(tags=["system"])


@router.get("/")
async def root() -> dict[str, str]:
    return {"name": "Todo API", "version": __version__, "docs": "/docs"}


@router.get("/health")
async def health() -> dict[str, str]:
    """Liveness: the process answers. Never touches the database."""
    return {"status": "healthy"}


@router.get("/health/ready", responses=error_responses(503))
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
        return error_response(ServiceUnavailable("Database unavailable"))
    return {"status": "ready", "database": "ok"}


metrics_router = APIRouter(tags=["system"])


@metrics_router.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
def metrics() -> Response:
    """Prometheus text format, aggregated over every worker process."""
    body, content_type = get_metrics().render()
    return Response(body, media_type=content_type)
