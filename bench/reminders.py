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
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from py_vapid import Vapid
from sqlalchemy import create_engine, text

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from streams import cpu_seconds  # noqa: E402 (bench scripts are not a package)
from tasks_100k import percentile, private_database, serve  # noqa: E402
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


class Reader(threading.Thread):
    """Reads one task back to back; keeps (start time, latency) of each read."""

    def __init__(self, base_url: str, headers: dict[str, str], task_id: int) -> None:
        super().__init__(daemon=True)
        self.http = httpx.Client(base_url=base_url, headers=headers, timeout=30)
        self.path = f"/api/me/tasks/{task_id}"
        self.samples: list[tuple[float, float]] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            start = time.time()
            self.http.get(self.path).raise_for_status()
            self.samples.append((start, time.time() - start))
            time.sleep(0.005)

    def between(self, start: float, end: float) -> list[float]:
        return [latency for at, latency in self.samples if start <= at < end]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("database", nargs="?", default="postgresql://root@127.0.0.1:5432/postgres")
    parser.add_argument("--reminders", type=int, default=10_000)
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--spread", type=float, default=0.0)
    parser.add_argument("--idle", type=float, default=8.0)
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
                "VAPID_PRIVATE_KEY": pem,
                "VAPID_SUBJECT": "mailto:bench@example.com",
                "PUSH_ALLOW_PRIVATE_ENDPOINTS": "true",
            }
            with serve(database_url, **settings) as (base_url, pid):
                users = setup_users(base_url, push, args.users)
                fire = (datetime.now(UTC) + timedelta(seconds=args.idle + 12)).replace(microsecond=0)
                insert_reminders(database_url, [user[0] for user in users], args.reminders, fire, args.spread)
                reader = Reader(base_url, users[0][1], users[0][2])
                reader.start()
                while time.time() < fire.timestamp() - 0.5:
                    time.sleep(0.05)
                idle = reader.between(fire.timestamp() - args.idle - 0.5, fire.timestamp() - 0.5)
                cpu_before = cpu_seconds(pid)
                arrivals: list[float] = []
                deadline = fire.timestamp() + args.spread + 300
                while len(arrivals) < args.reminders and time.time() < deadline:
                    seen = len(push.received)
                    arrivals.extend([time.time()] * (seen - len(arrivals)))
                    time.sleep(0.01)
                cpu = cpu_seconds(pid) - cpu_before
                end = time.time()
                reader.stopping.set()
                reader.join()
                burst = reader.between(fire.timestamp(), end)

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
    print(f"server CPU during the burst: {cpu:.1f} s")
    print(
        f"task read p95: idle {percentile(idle, 0.95) * 1000:.1f} ms ({len(idle)} reads), "
        f"during the burst {percentile(burst, 0.95) * 1000:.1f} ms ({len(burst)} reads); "
        f"ratio {percentile(burst, 0.95) / percentile(idle, 0.95):.2f}x"
    )


if __name__ == "__main__":
    main()
