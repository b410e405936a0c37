"""Latency of task listing, search, sorting, tags, deep pages, stats and single-task reads: one user, 100,000 tasks.

    uv run python bench/tasks_100k.py [POSTGRES_URL] [--tasks N] [--requests N] [--explain N] [--keep]

Creates a private database on the PostgreSQL server (default postgresql://root@127.0.0.1:5432/test), migrates
it, registers a user through the API, fills that user's tasks with a bulk INSERT (tags and checklists included;
the triggers fill task_tags from the tags), serves the real app with uvicorn in a subprocess and times real HTTP
requests over loopback, one at a time. Prints p50/p95 per scenario, then EXPLAIN ANALYZE of the SQL behind the
slowest scenarios and every tag scenario (captured by running the same service calls in-process), and drops the
database (unless --keep).
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
from sqlalchemy import Engine, create_engine, event, insert, make_url, text
from sqlalchemy.exc import DBAPIError

from todo_api.auth.principal import OwnerScope
from todo_api.config import normalize_database_url
from todo_api.migrations import upgrade
from todo_api.models import Task
from todo_api.tasks import service
from todo_api.tasks.models import TaskQuery

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SECRET = "bench-secret-that-is-at-least-32-characters-long"
VERBS = [
    "Write",
    "Review",
    "Call",
    "Email",
    "Plan",
    "Fix",
    "Buy",
    "Book",
    "Prepare",
    "Update",
    "Clean",
    "Pay",
]
NOUNS = [
    "report",
    "invoice",
    "dentist",
    "groceries",
    "slides",
    "budget",
    "garden",
    "car",
    "taxes",
    "newsletter",
    "roadmap",
    "tickets",
]
CATEGORIES = ["work", "home", "errands", "health", "finance", "study", "travel", "family"]
# Tags: every task 0-3 of 20 names. COMMON_TAG on ~30 % of the tasks, RARE_TAG on ~1 %; then 0, 1 or 2 draws
# from the others (45/35/20 %), the first far more often than the last (weights 18 down to 1): OTHER_TAG, the
# second most used, on ~7.5 %, the last on ~0.5 %. About 31 % of the tasks have no tag, 6 % have three.
COMMON_TAG = "inbox"
RARE_TAG = "legal"
OTHER_TAGS = [
    "phone",
    "computer",
    "waiting",
    "someday",
    "errand",
    "reading",
    "q1",
    "q2",
    "meeting",
    "family",
    "garden",
    "car",
    "tax",
    "school",
    "doctor",
    "gifts",
    "travel-plans",
    "Big Project",
]
OTHER_TAG = OTHER_TAGS[0]
CHECKLIST_ITEMS = ["Draft", "Ask for input", "Check the numbers", "Send", "File it", "Follow up"]
DETAILS = [
    "before the meeting",
    "ask Sam first",
    "see the shared folder",
    "urgent",
    "when back from holiday",
    "check last year's numbers",
    "with receipts",
    "draft is in the wiki",
]


# --- The database ---


@contextmanager
def private_database(server_url: str, keep: bool) -> Iterator[str]:
    """A database of our own on the server, dropped afterwards (like tests/conftest.py)."""
    admin_url = make_url(normalize_database_url(server_url))
    name = f"todo_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin_url.set(database=name).render_as_string(hide_password=False)
    finally:
        if keep:
            print(f"\nkept database {name}")
        else:
            with admin.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def tags_of(rng: random.Random) -> list[str]:
    """0-3 tags (see COMMON_TAG), sorted ignoring case as the API stores them."""
    others = rng.choices(OTHER_TAGS, weights=range(len(OTHER_TAGS), 0, -1), k=rng.choices([0, 1, 2], [45, 35, 20])[0])
    tags = {COMMON_TAG} if rng.random() < 0.30 else set()
    if rng.random() < 0.01:
        tags.add(RARE_TAG)
    tags.update(others[: 3 - len(tags)])
    return sorted(tags, key=lambda tag: (tag.lower(), tag))


def checklist_of(rng: random.Random) -> list[dict[str, Any]]:
    """A checklist of 1-6 items on 15 % of the tasks, some of them done."""
    if rng.random() >= 0.15:
        return []
    items = rng.sample(CHECKLIST_ITEMS, rng.randint(1, len(CHECKLIST_ITEMS)))
    return [{"title": item, "done": rng.random() < 0.4} for item in items]


def fill(engine: Engine, user_id: str, count: int, seed: int = 5) -> None:
    """`count` tasks for one user: mixed priorities, categories, due dates, 45% done, 2% in the trash, 0-3 tags
    (COMMON_TAG on ~30 %, RARE_TAG on ~1 %), a checklist on ~15 %. The tags are written as the `tags` JSON array
    only: the triggers on `tasks` fill `task_tags` from it, as they do for the API's writes (checked here)."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    start = now - timedelta(days=730)
    step = timedelta(days=730) / count
    rows: list[dict[str, Any]] = []
    for n in range(count):
        created = start + step * n
        updated = min(created + timedelta(hours=rng.randint(0, 72)), now)
        completed = rng.random() < 0.45
        due = now + timedelta(days=rng.uniform(-120, 120)) if rng.random() < 0.65 else None
        rows.append(
            {
                "user_id": user_id,
                "title": f"{rng.choice(VERBS)} {rng.choice(NOUNS)} #{n}",
                "description": f"{rng.choice(NOUNS)}: {rng.choice(DETAILS)}" if rng.random() < 0.5 else None,
                "completed": completed,
                "priority": rng.choices(["low", "medium", "high"], weights=[4, 4, 2])[0],
                "category": rng.choice(CATEGORIES) if rng.random() < 0.85 else None,
                "due_date": due,
                "completed_at": updated if completed else None,
                "created_at": created,
                "updated_at": updated,
                "version": rng.randint(1, 3),
                "trashed_at": updated if rng.random() < 0.02 else None,
                "tags": tags_of(rng),
                "checklist": checklist_of(rng),
            }
        )
    with engine.begin() as connection:
        for offset in range(0, count, 10_000):
            connection.execute(insert(Task), rows[offset : offset + 10_000])
        # The triggers made one task_tags row per (task, tag), those of live tasks marked live: check both, per tag,
        # against what was inserted.
        checks: dict[str, Callable[[dict[str, Any]], bool]] = {
            "": lambda row: True,
            " AND live": lambda row: row["trashed_at"] is None,
        }
        found: dict[str, int] = {}
        for condition, counted in checks.items():
            expected = Counter(tag.lower() for row in rows if counted(row) for tag in row["tags"])
            query = f"SELECT name_lower, count(*) FROM task_tags WHERE user_id = :u{condition} GROUP BY name_lower"
            counts: dict[str, int] = dict(connection.execute(text(query), {"u": user_id}).all())
            if counts != dict(expected):
                raise RuntimeError(f"task_tags{condition} does not match tasks: {counts} != {dict(expected)}")
            found = found or counts  # the first check's: every row
        print(
            f"task_tags: {sum(found.values()):,} rows for {sum(1 for row in rows if row['tags']):,} tagged tasks "
            f"({COMMON_TAG}: {found.get(COMMON_TAG, 0):,}, {OTHER_TAG}: {found.get(OTHER_TAG, 0):,}, "
            f"{RARE_TAG}: {found.get(RARE_TAG, 0):,}; untagged: {sum(1 for row in rows if not row['tags']):,}); "
            f"checklists on {sum(1 for row in rows if row['checklist']):,}"
        )
    # What autovacuum would have done by the time a user has 100,000 tasks: statistics, a visibility map, and
    # task_counts without the dead row versions the fill left behind. Then a checkpoint, as the server's own
    # would have written the fill out long before: otherwise it writes it out during the timed requests.
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("VACUUM ANALYZE"))
        try:
            connection.execute(text("CHECKPOINT"))
        except DBAPIError:
            print("no CHECKPOINT (it needs a superuser or pg_checkpoint): the fill may still be written meanwhile")


# --- The server ---


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def serve(database_url: str, **settings: str) -> Iterator[tuple[str, int]]:
    """The app served by uvicorn (1 worker) in a subprocess on a free loopback port: its URL and pid."""
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "ENVIRONMENT": "bench",
        "BETTER_AUTH_SECRET": SECRET,
        "BCRYPT_ROUNDS": "4",
        "LOG_LEVEL": "WARNING",
        **settings,
    }
    command = [sys.executable, "-m", "uvicorn", "todo_api.main:app", "--port", str(port), "--log-level", "warning"]
    process = subprocess.Popen([*command, "--no-access-log"], cwd=PROJECT_ROOT, env=env)
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base_url}/health/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.1)
        yield base_url, process.pid
    finally:
        process.terminate()
        process.wait(timeout=30)


# --- Measuring ---


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def measure(
    scenarios: dict[str, Callable[[], httpx.Response]], requests: int, warmup: int = 20
) -> dict[str, tuple[list[float], str]]:
    """Latencies in ms of `requests` calls per scenario, and what each returned. The scenarios take turns, one
    request each, so a load spike on the machine hits them all alike, not whichever ran at that moment."""
    for request in scenarios.values():
        for _ in range(warmup):
            request().raise_for_status()
    samples: dict[str, list[float]] = {label: [] for label in scenarios}
    last: dict[str, httpx.Response] = {}
    for _ in range(requests):
        for label, request in scenarios.items():
            started = time.perf_counter()
            response = request()
            samples[label].append((time.perf_counter() - started) * 1000)
            if response.status_code != 200:
                raise RuntimeError(f"{label}: {response.status_code}: {response.text[:200]}")
            last[label] = response
    results = {}
    for label, response in last.items():
        body = response.json()
        total = response.headers.get("x-total-count")
        shape = (f"{len(body)} of {total}" if total is not None else f"{len(body)}") if isinstance(body, list) else ""
        results[label] = (samples[label], shape)
    return results


LIST_SCENARIOS: dict[str, dict[str, str | list[str]]] = {
    "list: default (newest first, 100)": {},
    "list: priority=high&status=pending&category=work": {
        "priority": "high",
        "status": "pending",
        "category": "work",
    },
    "list: search=invoice (in 12% of tasks)": {"search": "invoice"},
    "list: search=#4242 (selective)": {"search": "#4242"},
    "list: sort_by=due_date (desc)": {"sort_by": "due_date"},
    "list: sort_by=due_date&sort_order=asc": {"sort_by": "due_date", "sort_order": "asc"},
    "list: sort_by=priority": {"sort_by": "priority"},
    "list: sort_by=title&sort_order=asc": {"sort_by": "title", "sort_order": "asc"},
    "list: sort_by=completed_at": {"sort_by": "completed_at"},
    "list: sort_by=completed_at&sort_order=asc": {"sort_by": "completed_at", "sort_order": "asc"},
    "list: offset=90000": {"offset": "90000"},
    "list: overdue=true": {"overdue": "true"},
    "list: trashed=true": {"trashed": "true"},
}
TAG_SCENARIOS: dict[str, dict[str, str | list[str]]] = {
    f"tags: tag={COMMON_TAG} (~30%)": {"tag": [COMMON_TAG]},
    f"tags: tag={RARE_TAG} (~1%)": {"tag": [RARE_TAG]},
    f"tags: tag={COMMON_TAG}&tag={OTHER_TAG}": {"tag": [COMMON_TAG, OTHER_TAG]},
    f"tags: tag={COMMON_TAG}&search=invoice": {"tag": [COMMON_TAG], "search": "invoice"},
    f"tags: tag={COMMON_TAG}&sort_by=due_date&sort_order=asc": {
        "tag": [COMMON_TAG],
        "sort_by": "due_date",
        "sort_order": "asc",
    },
    "tags: untagged=true": {"untagged": "true"},
}
LIST_SCENARIOS |= TAG_SCENARIOS
TAG_LIST = "tags: GET /api/{user_id}/tags"
TAG_TARGET_MS = 20.0
"""The issue's target for the tag filter (alone, with a search, with a sort): p95 below this, at 100,000 tasks."""


def explain(engine: Engine, user_id: str, label: str) -> None:
    """EXPLAIN ANALYZE every statement the service runs for this scenario."""
    statements: list[tuple[str, Any]] = []
    scope = OwnerScope(user_id)

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        statements.append((statement, parameters))

    with engine.connect() as connection:
        event.listen(engine, "before_cursor_execute", capture)
        try:
            if label == "stats":
                service.task_stats(connection, scope=scope, zone=ZoneInfo("Europe/Berlin"))
            elif label == TAG_LIST:
                service.list_tags(connection, scope=scope)
            else:
                service.list_tasks(connection, scope=scope, query=TaskQuery.model_validate(LIST_SCENARIOS[label]))
        finally:
            event.remove(engine, "before_cursor_execute", capture)
        print(f"\n--- {label}")
        for statement, parameters in statements:
            plan = connection.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS) " + statement, parameters)
            print(statement.strip())
            print("   params:", parameters)
            for (line,) in plan:
                print("   ", line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", nargs="?", default="postgresql://root@127.0.0.1:5432/test", help="PostgreSQL server")
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=200, help="timed requests per scenario")
    parser.add_argument(
        "--explain", type=int, default=3, help="EXPLAIN ANALYZE the N slowest scenarios (and every tag scenario)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    args = parser.parse_args()

    with private_database(args.url, args.keep) as database_url:
        upgrade(database_url)
        engine = create_engine(make_url(normalize_database_url(database_url)))
        with engine.connect() as connection:
            server_version = connection.execute(text("SHOW server_version")).scalar_one()
        with serve(database_url) as (base_url, _), httpx.Client(base_url=base_url, timeout=30) as http:
            registered = http.post(
                "/api/auth/register",
                json={
                    "name": "Bench",
                    "email": f"bench-{uuid.uuid4().hex[:8]}@example.com",
                    "password": "a bench password that is long",
                },
            )
            registered.raise_for_status()
            user_id = registered.json()["user"]["id"]
            http.headers["Authorization"] = f"Bearer {registered.json()['access_token']}"

            started = time.perf_counter()
            fill(engine, user_id, args.tasks)
            print(
                f"filled {args.tasks:,} tasks in {time.perf_counter() - started:.1f} s "
                f"(PostgreSQL {server_version}, Python {platform.python_version()}, {os.cpu_count()} CPUs)"
            )
            first = http.get("/api/me/tasks", params={"limit": 1})
            print(f"X-Total-Count (live tasks): {first.headers['x-total-count']}\n")

            with engine.connect() as connection:
                live = text("SELECT id FROM tasks WHERE user_id = :u AND trashed_at IS NULL")
                live_ids = [row[0] for row in connection.execute(live, {"u": user_id})]
            rng = random.Random(1)

            def listing(params: dict[str, str | list[str]]) -> Callable[[], httpx.Response]:
                return lambda: http.get("/api/me/tasks", params=params)

            scenarios = {label: listing(params) for label, params in LIST_SCENARIOS.items()}
            scenarios["stats"] = lambda: http.get("/api/me/stats", params={"tz": "Europe/Berlin"})
            scenarios[TAG_LIST] = lambda: http.get("/api/me/tags")
            # Baselines: the framework alone, then token + user lookup (every task route pays both).
            scenarios["baseline: GET /health (no database)"] = lambda: http.get("/health")
            scenarios["baseline: GET /api/auth/me (token + user)"] = lambda: http.get("/api/auth/me")
            scenarios["single task GET"] = lambda: http.get(f"/api/me/tasks/{rng.choice(live_ids)}")

            load_before = os.getloadavg()
            results = measure(scenarios, args.requests)
            load_after = os.getloadavg()

        before, after = (" ".join(f"{value:.1f}" for value in load) for load in (load_before, load_after))
        print(f"load average (1/5/15 min) before: {before}, after: {after}\n")
        print(f"{'scenario':<52} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}  rows")
        for label, (samples, shape) in results.items():
            print(
                f"{label:<52} {statistics.median(samples):8.1f} {percentile(samples, 0.95):8.1f} "
                f"{max(samples):8.1f}  {shape}"
            )

        print(f"\ntarget: the tag filter alone, with a search and with a sort: p95 < {TAG_TARGET_MS:.0f} ms")
        for label in [*TAG_SCENARIOS, TAG_LIST]:
            p95 = percentile(results[label][0], 0.95)
            print(f"  {label:<52} p95 {p95:6.1f} ms  {'ok' if p95 < TAG_TARGET_MS else 'MISS'}")

        by_p95 = sorted(results, key=lambda label: percentile(results[label][0], 0.95), reverse=True)
        others = [
            label for label in by_p95 if label == "stats" or label in LIST_SCENARIOS and label not in TAG_SCENARIOS
        ]
        slowest = others[: args.explain]
        print(
            "\nEXPLAIN ANALYZE of the slowest scenarios and every tag scenario (statements as the service runs them):"
        )
        for label in [*slowest, *TAG_SCENARIOS, TAG_LIST]:
            explain(engine, user_id, label)
        engine.dispose()


if __name__ == "__main__":
    main()
