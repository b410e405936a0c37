"""The `todo-api` command: `serve` (migrates first), `migrate`, and `purge-trash` (for cron)."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Sequence
from datetime import timedelta

from sqlmodel import Session

from todo_api.config import get_settings
from todo_api.db import build_engine, utcnow
from todo_api.logs import configure_logging
from todo_api.metrics import MULTIPROC_ENV
from todo_api.migrations import upgrade
from todo_api.tasks import service as tasks_service


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
    purge = commands.add_parser(
        "purge-trash", help="permanently delete tasks that have been in the trash too long (run it from cron)"
    )
    purge.add_argument(
        "--days",
        type=int,
        default=settings.TRASH_RETENTION_DAYS,
        help=f"days trashed tasks are kept (default {settings.TRASH_RETENTION_DAYS}: TRASH_RETENTION_DAYS)",
    )
    return parser


def purge_trash(days: int) -> int:
    """Delete every user's tasks trashed more than `days` days ago; prints and returns how many."""
    engine = build_engine(get_settings())
    try:
        with Session(engine, expire_on_commit=False) as session:
            purged = tasks_service.purge_trash(session, older_than=utcnow() - timedelta(days=days))
    finally:
        engine.dispose()
    sys.stdout.write(f"purged {purged} task(s) trashed more than {days} day(s) ago\n")
    return purged


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "purge-trash" and args.days < 0:
        parser.error("--days must be 0 or more")
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
            # No `server: uvicorn` on every response: it tells a scanner what to try and a client nothing (OWASP's
            # Secure Headers Project: remove it).
            server_header=False,
            log_config=None,
            log_level=settings.LOG_LEVEL.lower(),
            timeout_graceful_shutdown=settings.GRACEFUL_TIMEOUT,
        )
    elif args.command == "purge-trash":
        purge_trash(args.days)
    return 0
