"""The `todo-api` command: `serve` (migrates first), `migrate`, `worker` (reminders apart from the API), and
`purge-trash` (for cron)."""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from datetime import timedelta

from todo_api.config import Settings, create_development_secret, export_to_workers, get_settings
from todo_api.db import Database, build_engine, utcnow
from todo_api.logs import configure_logging
from todo_api.migrations import SchemaNotCurrent, check_schema, upgrade
from todo_api.tasks import service as tasks_service


def _parser() -> argparse.ArgumentParser:
    """Builds no Settings: options that default to a setting are None until `main` reads it, so `--help` and usage
    errors work whatever the environment holds."""
    parser = argparse.ArgumentParser(prog="todo-api", description="Todo API service")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="migrate the database, then serve the API")
    serve.add_argument("--host", help="bind address (default: the HOST setting)")
    serve.add_argument("--port", type=int, help="port (default: the PORT setting)")
    serve.add_argument("--workers", type=int, help="worker processes (default: the WEB_CONCURRENCY setting)")
    serve.add_argument("--reload", action="store_true", help="restart on code changes (development)")
    commands.add_parser("migrate", help="upgrade the database to the newest schema")
    commands.add_parser(
        "worker",
        help="run the reminder scheduler without serving the API (set REMINDERS_ENABLED=false on the API then, "
        "or keep both: they share the work); it never migrates",
    )
    purge = commands.add_parser(
        "purge-trash",
        help="permanently delete tasks that have been in the trash too long (run it from cron; it never migrates)",
    )
    purge.add_argument(
        "--days", type=int, help="days trashed tasks are kept (default: the TRASH_RETENTION_DAYS setting)"
    )
    return parser


def purge_trash(days: int) -> int:
    """Delete every user's tasks trashed more than `days` days ago; prints and returns how many.

    Raises SchemaNotCurrent, changing nothing, unless the database is migrated: only `serve` and `migrate` migrate.
    """
    settings = get_settings()
    engine = build_engine(settings)
    try:
        with engine.connect() as connection:
            check_schema(connection)
        purged = tasks_service.purge_trash(Database(engine, settings), older_than=utcnow() - timedelta(days=days))
    finally:
        engine.dispose()
    sys.stdout.write(f"purged {purged} task(s) trashed more than {days} day(s) ago\n")
    return purged


def worker(settings: Settings) -> None:
    """The reminder scheduler in this process until SIGTERM or SIGINT, which let the sends under way finish."""
    import signal

    from todo_api.events.hub import publisher
    from todo_api.reminders.scheduler import Scheduler

    engine = build_engine(settings)
    try:
        with engine.connect() as connection:
            check_schema(connection)
        scheduler = Scheduler(Database(engine, settings), settings)
        with publisher(settings) as publish:
            scheduler.database.committed = publish  # the API instances' streams hear of reminder events
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: scheduler.stop())
            sys.stdout.write("todo-api worker: sending reminders (SIGTERM or Ctrl+C to stop)\n")
            sys.stdout.flush()
            scheduler.run()
    finally:
        engine.dispose()


def serve(settings: Settings, *, host: str, port: int, workers: int, reload: bool) -> None:
    import uvicorn

    # Each worker builds its own Settings from the environment: it takes its share of the CPUs for password hashing
    # (Settings.password_hash_concurrency) and, with metrics on, writes its samples to the folder every worker shares
    # (a fresh one unless set; prometheus_client reads it from the environment), so /metrics is right whichever
    # worker answers.
    handed_over: dict[str, str | int] = {"WEB_CONCURRENCY": workers}
    if settings.METRICS_ENABLED:
        handed_over["PROMETHEUS_MULTIPROC_DIR"] = settings.PROMETHEUS_MULTIPROC_DIR or tempfile.mkdtemp(
            prefix="todo-api-metrics-"
        )
    export_to_workers(**handed_over)
    uvicorn.run(
        "todo_api.main:app",
        host=host,
        port=port,
        workers=workers,
        reload=reload,
        # Forwarded headers are trusted only through TRUSTED_PROXIES, never by uvicorn's loopback default.
        proxy_headers=False,
        # The app logs one line per request itself; uvicorn's own lines go through the same handler.
        access_log=False,
        # No `server: uvicorn` on every response: it tells a scanner what to try and a client nothing (OWASP's
        # Secure Headers Project: remove it).
        server_header=False,
        log_config=None,
        log_level=settings.LOG_LEVEL.lower(),
        timeout_graceful_shutdown=settings.GRACEFUL_TIMEOUT,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "purge-trash" and args.days is not None and args.days < 0:
        parser.error("--days must be 0 or more")
    if args.command == "serve" and args.workers is not None and args.workers < 1:
        parser.error("--workers must be 1 or more")
    if args.command in {"serve", "migrate"}:
        create_development_secret()  # before any Settings are built: this process and every worker read one secret
    settings = get_settings()
    configure_logging(settings.LOG_LEVEL, settings.log_format)
    if args.command == "worker":
        try:
            worker(settings)
        except SchemaNotCurrent as exc:
            sys.stderr.write(f"todo-api: {exc}\n")
            return 1
        return 0
    if args.command == "purge-trash":
        try:
            purge_trash(settings.TRASH_RETENTION_DAYS if args.days is None else args.days)
        except SchemaNotCurrent as exc:
            sys.stderr.write(f"todo-api: {exc}\n")
            return 1
        return 0
    upgrade(settings.DATABASE_URL)
    if args.command == "serve":
        serve(
            settings,
            host=settings.HOST if args.host is None else args.host,
            port=settings.PORT if args.port is None else args.port,
            workers=settings.WEB_CONCURRENCY if args.workers is None else args.workers,
            reload=args.reload,
        )
    return 0
