"""The `todo-api` command: `serve` (migrates first) and `migrate`."""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Sequence

from todo_api.config import get_settings
from todo_api.logs import configure_logging
from todo_api.metrics import MULTIPROC_ENV
from todo_api.migrations import upgrade


def _parser() -> argparse.ArgumentParser:
    settings = get_settings()
    parser = argparse.ArgumentParser(prog="todo-api", description="Todo API service")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="migrate the database, then serve the API")
    serve.add_argument("--host", default=settings.HOST, help=f"bind address (default {settings.HOST})")
    serve.add_argument("--port", type=int, default=settings.PORT, help=f"port (default {settings.PORT})")
    serve.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    serve.add_argument("--reload", action="store_true", help="restart on code changes (development)")
    commands.add_parser("migrate", help="upgrade the database to the newest schema")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings = get_settings()
    configure_logging(settings.LOG_LEVEL)
    upgrade()
    if args.command == "serve":
        import uvicorn

        # Each worker takes its share of the CPUs for password hashing (Settings.password_hash_concurrency).
        os.environ["WEB_CONCURRENCY"] = str(args.workers)
        if settings.METRICS_ENABLED:
            # Every worker writes its samples here, so /metrics is right whichever worker answers.
            os.environ[MULTIPROC_ENV] = tempfile.mkdtemp(prefix="todo-api-metrics-")
        uvicorn.run(
            "todo_api.main:app",
            host=args.host,
            port=args.port,
            workers=args.workers,
            reload=args.reload,
            # Forwarded headers are trusted only through TRUSTED_PROXIES, never by uvicorn's loopback default.
            proxy_headers=False,
            # The app logs one JSON line per request itself; uvicorn's own lines go through the same handler.
            access_log=False,
            log_config=None,
            log_level=settings.LOG_LEVEL.lower(),
            timeout_graceful_shutdown=settings.GRACEFUL_TIMEOUT,
        )
    return 0
