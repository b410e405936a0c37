"""Soak test: N users doing mixed CRUD at a fixed total rate against PostgreSQL, for a fixed time.

    ./dev uv run python bench/soak.py --users 20 --rate 50 --duration 600 --workers 2

Starts the service like bench/run.py does (a private, migrated PostgreSQL database; `todo-api serve` in its own
process group), creates the users through the API, then sends requests on a fixed schedule (open loop: a slow
answer does not slow the schedule down) and prints: requests, status counts, 5xx count, p50/p95/p99 latency,
RSS per worker at the start and the end with its growth and trend, and the peak number of database connections.
Exit status 1 on any 5xx (or a transport error), 0 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import PASSWORD, _rss_mb, private_database, serve  # noqa: E402

DEFAULT_ADMIN_URL = "postgresql://root@127.0.0.1:5432/test"
SECRET = "soak-secret-that-is-at-least-32-characters"
# The mix: a frontend mostly reads.
MIX = [("list", 40), ("get", 20), ("create", 20), ("update", 10), ("complete", 5), ("delete", 5)]


@dataclass
class User:
    headers: dict[str, str]
    task_ids: list[int] = field(default_factory=list)


@dataclass
class Results:
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)


async def _register(client: httpx.AsyncClient, n: int) -> User:
    response = await client.post(
        "/api/auth/register",
        json={"name": f"Soak {n}", "email": f"soak-{n}-{time.time_ns()}@example.com", "password": PASSWORD},
    )
    response.raise_for_status()
    user = User({"Authorization": f"Bearer {response.json()['access_token']}"})
    for i in range(5):
        created = await client.post("/api/me/tasks", headers=user.headers, json={"title": f"seed {i}"})
        created.raise_for_status()
        user.task_ids.append(created.json()["id"])
    return user


async def _one(client: httpx.AsyncClient, user: User, action: str, results: Results) -> None:
    task_id = random.choice(user.task_ids) if user.task_ids else 0
    start = time.perf_counter()
    try:
        if action == "list":
            response = await client.get("/api/me/tasks", headers=user.headers)
        elif action == "get":
            response = await client.get(f"/api/me/tasks/{task_id}", headers=user.headers)
        elif action == "create" or not user.task_ids:
            response = await client.post(
                "/api/me/tasks", headers=user.headers, json={"title": "soak", "priority": "high"}
            )
            if response.status_code == 201:
                user.task_ids.append(response.json()["id"])
        elif action == "update":
            response = await client.patch(f"/api/me/tasks/{task_id}", headers=user.headers, json={"title": "edited"})
        elif action == "complete":
            response = await client.patch(f"/api/me/tasks/{task_id}/complete", headers=user.headers)
        else:
            response = await client.delete(f"/api/me/tasks/{task_id}", headers=user.headers)
            if response.status_code == 204 and task_id in user.task_ids:
                user.task_ids.remove(task_id)
    except httpx.HTTPError as exc:
        results.errors[type(exc).__name__] += 1
        return
    results.latencies.append(time.perf_counter() - start)
    results.statuses[response.status_code] += 1


async def _drive(
    base: str, *, users: int, rate: float, duration: float, results: Results, on_tick: asyncio.Event
) -> None:
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=base, timeout=30, limits=limits) as client:
        accounts = [await _register(client, n) for n in range(users)]
        actions = [name for name, weight in MIX for _ in range(weight)]
        interval = 1 / rate
        started = time.perf_counter()
        pending: set[asyncio.Task[None]] = set()
        sent = 0
        while (elapsed := time.perf_counter() - started) < duration:
            due = int(elapsed / interval) + 1
            while sent < due:
                task = asyncio.create_task(_one(client, random.choice(accounts), random.choice(actions), results))
                pending.add(task)
                task.add_done_callback(pending.discard)
                sent += 1
            on_tick.set()
            await asyncio.sleep(min(interval, 0.01))
        if pending:
            await asyncio.wait(pending, timeout=60)


def _workers(pids: list[int]) -> list[int]:
    """The server's worker processes, without multiprocessing's resource tracker."""
    workers = []
    for pid in pids:
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"resource_tracker" not in command:
            workers.append(pid)
    return workers


def _slope(points: list[tuple[float, float]]) -> float:
    """Least-squares growth in MB per minute."""
    if len(points) < 2:
        return 0.0
    xs, ys = zip(*points, strict=True)
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mean_x) ** 2 for x in xs)
    return 0.0 if den == 0 else 60 * sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / den


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else 0.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--rate", type=float, default=50, help="total requests per second")
    parser.add_argument("--duration", type=float, default=600, help="seconds")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--database-url", default=DEFAULT_ADMIN_URL, help="a PostgreSQL server to create a db on")
    args = parser.parse_args(argv)

    results = Results()
    memory: dict[int, list[tuple[float, float]]] = {}
    peak_connections = 0
    with (
        tempfile.TemporaryDirectory(prefix="todo-soak-") as scratch,
        private_database(args.database_url) as (
            url,
            backends,
        ),
        serve(url, workers=args.workers, secret=SECRET, rounds=None, scratch=Path(scratch)) as server,
    ):

        async def sample(tick: asyncio.Event) -> None:
            nonlocal peak_connections
            started = time.monotonic()
            while True:
                await tick.wait()
                for pid in _workers(server.worker_pids()):
                    rss = _rss_mb(pid)
                    if rss is not None:
                        memory.setdefault(pid, []).append((time.monotonic() - started, rss))
                peak_connections = max(peak_connections, len(await asyncio.to_thread(backends)))
                await asyncio.sleep(5)

        async def run() -> None:
            tick = asyncio.Event()
            sampler = asyncio.create_task(sample(tick))
            try:
                await _drive(
                    server.url, users=args.users, rate=args.rate, duration=args.duration, results=results, on_tick=tick
                )
            finally:
                sampler.cancel()

        asyncio.run(run())
        server_log = "".join(p.read_text(errors="replace") for p in Path(scratch).glob("server-*.log"))

    # Why the server answered 503, from its own log lines (the driver's first line, no SQL or secrets).
    reasons = Counter(
        line.split("database unavailable: ", 1)[1][:160]
        for line in server_log.splitlines()
        if "database unavailable: " in line
    )

    server_errors = sum(count for status, count in results.statuses.items() if status >= 500)
    total = sum(results.statuses.values())
    print(f"soak: {args.users} users, {args.rate:g} req/s, {args.duration:g} s, {args.workers} worker(s)")
    print(
        f"requests: {total}  statuses: {dict(sorted(results.statuses.items()))}  5xx: {server_errors}"
        f"  transport errors: {dict(results.errors) or 0}"
    )
    print(
        f"latency ms: p50 {_percentile(results.latencies, 0.50):.1f}  p95 {_percentile(results.latencies, 0.95):.1f}"
        f"  p99 {_percentile(results.latencies, 0.99):.1f}"
    )
    for pid, points in sorted(memory.items()):
        settled = [p for p in points if p[0] >= points[-1][0] * 0.1] or points
        print(
            f"worker {pid}: RSS {points[0][1]:.1f} -> {points[-1][1]:.1f} MB (peak {max(p[1] for p in points):.1f}),"
            f" trend after warm-up {_slope(settled):+.3f} MB/min"
        )
    print(f"peak database connections: {peak_connections}")
    for reason, count in reasons.most_common(5):
        print(f"503 reason ({count}x): {reason}")
    return 1 if server_errors or results.errors else 0


if __name__ == "__main__":
    sys.exit(main())
