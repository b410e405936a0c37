"""A burst of reminders: 10,000 due in the same minute, one instance, pushed to the loopback Web Push stand-in.

    uv run python bench/reminders.py [POSTGRES_URL] [--reminders N] [--users N] [--spread SECONDS] [--idle SECONDS]

One instance (`python -m uvicorn`, 1 worker, its scheduler on) on a private PostgreSQL database. `--users` (100)
users each subscribe one browser (tests/reminders/push_service.py: it checks the VAPID JWT and decrypts every
message) and want push only; `--reminders` (10,000) tasks are inserted with one reminder each, all firing within
`--spread` seconds (0: the same instant) of one moment 20 s ahead. Reported:
- every reminder delivered, and its lag: from `fire_at` to the stand-in having the message (p50, p99, max);
- a user's task read (GET /api/me/tasks/{id}, one client, back to back) p95 while idle and during the burst;
- the server's CPU seconds for the burst.
Only loopback addresses are contacted.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from py_vapid import Vapid
from sqlalchemy import create_engine, text

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from streams import cpu_seconds  # noqa: E402 (bench scripts are not a package)
from tasks_100k import SECRET, percentile, private_database, serve  # noqa: E402
from tests.reminders.push_service import PushService  # noqa: E402 (the same stand-in as the tests)

from todo_api.config import normalize_database_url  # noqa: E402
from todo_api.migrations import upgrade  # noqa: E402
from todo_api.reminders.push import application_server_key, load_vapid_key  # noqa: E402

QUIET = {"RATE_LIMIT_ENABLED": "false", "MCP_ENABLED": "false"}


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z").replace(".000000Z", "Z")


def setup_users(base_url: str, push: PushService, count: int) -> list[tuple[str, dict[str, str], int]]:
    """`count` users, each with push only, one subscription and one task to read: (id, headers, task id)."""
    users = []
    with httpx.Client(base_url=base_url, timeout=30) as http:
        for n in range(count):
            body = {"name": f"r{n}", "email": f"rem-{uuid.uuid4().hex[:10]}@example.com", "password": "a long password"}
            registered = http.post("/api/auth/register", json=body)
            registered.raise_for_status()
            headers = {"Authorization": f"Bearer {registered.json()['access_token']}"}
            http.patch("/api/auth/me", headers=headers, json={"notification_channels": ["push"]}).raise_for_status()
            http.post("/api/me/push-subscriptions", headers=headers, json=push.subscribe(f"u{n}")).raise_for_status()
            task = http.post("/api/me/tasks", headers=headers, json={"title": "read me"})
            task.raise_for_status()
            users.append((registered.json()["user"]["id"], headers, int(task.json()["id"])))
    return users


def insert_reminders(database_url: str, user_ids: list[str], count: int, fire: datetime, spread: float) -> None:
    """`count` tasks with one reminder each, spread over the users, firing within `spread` s of `fire`."""
    engine = create_engine(normalize_database_url(database_url))
    rows = []
    for n in range(count):
        at = iso(fire + timedelta(seconds=spread * n / count))
        reminders = json.dumps([{"at": at, "id": 1, "fire_at": at, "fired_at": None}])
        rows.append({"user_id": user_ids[n % len(user_ids)], "title": f"burst {n}", "reminders": reminders})
    now = datetime.now(UTC)
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO tasks (user_id, title, completed, priority, created_at, updated_at, version, reminders) "
                "VALUES (:user_id, :title, false, 'medium', :now, :now, 1, CAST(:reminders AS jsonb))"
            ),
            [{**row, "now": now} for row in rows],
        )
        armed = connection.execute(text("SELECT count(*) FROM reminder_jobs")).scalar()
    engine.dispose()
    assert armed == count, f"{armed} of {count} reminders armed"


def read_loop(base_url: str, headers: dict[str, str], task_id: int, until: float, samples: Any) -> None:
    """Reads one task back to back until `until`, sending each read's (start time, latency) to `samples`. Run in a
    process of its own: the stand-in's work (checking and decrypting 10,000 messages) must not slow the client."""
    with httpx.Client(base_url=base_url, headers=headers, timeout=30) as http:
        path = f"/api/me/tasks/{task_id}"
        taken = []
        while (start := time.time()) < until:
            http.get(path).raise_for_status()
            taken.append((start, time.time() - start))
            time.sleep(0.005)
    samples.put(taken)


@contextmanager
def worker(database_url: str, apart: bool, settings: dict[str, str]) -> Iterator[None]:
    """With `--worker`: the scheduler as `todo-api worker`, a process of its own (the API's is off)."""
    if not apart:
        yield
        return
    env = {**os.environ, **settings, "DATABASE_URL": database_url, "ENVIRONMENT": "bench", "BETTER_AUTH_SECRET": SECRET}
    process = subprocess.Popen([sys.executable, "-m", "todo_api", "worker"], env=env, stdout=subprocess.DEVNULL)
    try:
        yield
    finally:
        process.terminate()
        process.wait(timeout=30)


def postgres_cpu() -> float:
    """CPU seconds of every PostgreSQL process on this machine (the shared server: other work counts too)."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text_ = stat.read_text()
        except OSError:
            continue
        if "(postgres)" in text_:
            total += cpu_seconds(int(stat.parent.name))
    return total


def machine_times() -> tuple[int, int]:
    """(busy, total) jiffies of all cores (/proc/stat)."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def between(samples: list[tuple[float, float]], start: float, end: float) -> list[float]:
    return [latency for at, latency in samples if start <= at < end]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("database", nargs="?", default="postgresql://root@127.0.0.1:5432/postgres")
    parser.add_argument("--reminders", type=int, default=10_000)
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--spread", type=float, default=0.0)
    parser.add_argument("--idle", type=float, default=8.0)
    parser.add_argument(
        "--stand-in-nice",
        type=int,
        default=0,
        help="run the push stand-in (this process) at a lower CPU priority, as if it were on another machine",
    )
    parser.add_argument("--worker", action="store_true", help="the scheduler in `todo-api worker`, apart")
    parser.add_argument("--profile", help="write py-spy's collapsed stacks of the server's burst here")
    parser.add_argument("--py-spy", default="py-spy")
    parser.add_argument("--server-pythonpath", default="", help="(experiments: e.g. a sitecustomize)")
    parser.add_argument("--send-concurrency", default="8", help="REMINDER_SEND_CONCURRENCY")
    parser.add_argument("--read-seconds", type=float, default=15.0, help="reads from the first fire_at on")
    args = parser.parse_args()

    vapid = Vapid()
    vapid.generate_keys()
    pem = vapid.private_pem().decode()
    with private_database(args.database, keep=False) as database_url:
        upgrade(database_url)
        with PushService(vapid_public_key=application_server_key(load_vapid_key(pem))) as push:
            settings = {
                **QUIET,
                "REMINDERS_ENABLED": "true",
                "REMINDER_POLL_SECONDS": "1",
                "REMINDER_SEND_CONCURRENCY": args.send_concurrency,
                **({"PYTHONPATH": args.server_pythonpath} if args.server_pythonpath else {}),
                "VAPID_PRIVATE_KEY": pem,
                "VAPID_SUBJECT": "mailto:bench@example.com",
                "PUSH_ALLOW_PRIVATE_ENDPOINTS": "true",
            }
            api_settings = {**settings, "REMINDERS_ENABLED": "false"} if args.worker else settings
            with serve(database_url, **api_settings) as (base_url, pid), worker(database_url, args.worker, settings):
                users = setup_users(base_url, push, args.users)
                fire = (datetime.now(UTC) + timedelta(seconds=args.idle + 12)).replace(microsecond=0)
                insert_reminders(database_url, [user[0] for user in users], args.reminders, fire, args.spread)
                context = multiprocessing.get_context("spawn")
                queue = context.Queue()
                until = fire.timestamp() + args.spread + args.read_seconds
                reader = context.Process(target=read_loop, args=(base_url, users[0][1], users[0][2], until, queue))
                reader.start()
                if args.stand_in_nice:  # this process only (the server, worker and reader started already)
                    os.nice(args.stand_in_nice)
                while time.time() < fire.timestamp():
                    time.sleep(0.05)
                cpu_before = cpu_seconds(pid)
                machine_before, own_before, db_before = machine_times(), os.times(), postgres_cpu()
                profiler = None
                if args.profile:  # py-spy on the server for the burst (collapsed stacks)
                    command = [args.py_spy, "record", "-p", str(pid), "-d", "25", "-r", "200", "-f", "raw"]
                    profiler = subprocess.Popen([*command, "-o", args.profile], stdout=subprocess.DEVNULL)
                arrivals: list[float] = []
                deadline = fire.timestamp() + args.spread + 300
                while len(arrivals) < args.reminders and time.time() < deadline:
                    seen = len(push.received)
                    arrivals.extend([time.time()] * (seen - len(arrivals)))
                    time.sleep(0.01)
                cpu = cpu_seconds(pid) - cpu_before
                machine_after, own_after, db = machine_times(), os.times(), postgres_cpu() - db_before
                own = (own_after.user + own_after.system) - (own_before.user + own_before.system)
                busy = (machine_after[0] - machine_before[0]) / max(machine_after[1] - machine_before[1], 1)
                end = time.time()
                if profiler is not None:
                    profiler.wait()
                samples = queue.get(timeout=args.read_seconds + args.spread + 600)
                reader.join()
                idle = between(samples, fire.timestamp() - args.idle - 0.5, fire.timestamp() - 0.5)
                burst = between(samples, fire.timestamp(), min(end, until))

    fires = [fire.timestamp() + args.spread * n / args.reminders for n in range(args.reminders)]
    # Messages arrive in fire_at order within a batch (ORDER BY fire_at): the n-th arrival is the n-th reminder.
    lags = [arrival - fired for arrival, fired in zip(arrivals, sorted(fires), strict=False)]
    print(f"reminders: {args.reminders} to {args.users} users, fire spread {args.spread:g} s")
    print(f"delivered: {len(arrivals)} / {args.reminders}; stand-in errors: {len(push.errors)}")
    if lags:
        print(
            f"lag (fire_at -> delivered): p50 {percentile(lags, 0.5):.2f} s, p99 {percentile(lags, 0.99):.2f} s, "
            f"max {max(lags):.2f} s; all delivered {end - fire.timestamp():.1f} s after the first fire_at"
        )
    print(
        f"CPU during the burst: server {cpu:.1f} s, PostgreSQL {db:.1f} s, this process (the push stand-in) "
        f"{own:.1f} s; "
        f"the machine's cores {busy * 100:.0f} % busy"
    )
    print(
        f"task read p95: idle {percentile(idle, 0.95) * 1000:.1f} ms ({len(idle)} reads), "
        f"during the burst {percentile(burst, 0.95) * 1000:.1f} ms ({len(burst)} reads); "
        f"ratio {percentile(burst, 0.95) / percentile(idle, 0.95):.2f}x"
    )


if __name__ == "__main__":
    main()
