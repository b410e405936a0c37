"""Live changes under load: idle event streams (memory, CPU) and event latency across two instances.

    uv run python bench/streams.py [POSTGRES_URL] [--streams N] [--idle SECONDS] [--writes-per-second N]
                                   [--seconds N] [--users N]

1. One instance (`python -m uvicorn`, 1 worker) on a private PostgreSQL database: opens `--streams` (1,000) event
   streams (10 per user) from one asyncio client, then leaves them idle for `--idle` seconds: the server's RSS growth
   (/proc) and its CPU while idle (every stream checked every EVENT_AUTH_CHECK_SECONDS, a heartbeat each
   EVENT_HEARTBEAT_SECONDS).
2. Two instances sharing the database and Redis (127.0.0.1:6379): `--users` (100) users each hold one stream on the
   second instance; `--writes-per-second` (200) task creations spread over them go to the first for `--seconds`;
   each event's latency is the time from the creation's answer (sent after the commit) to the event reaching the
   stream on the other instance.
Only loopback addresses are contacted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
import uuid
from contextlib import ExitStack
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tasks_100k import percentile, private_database, serve  # noqa: E402 (bench scripts are not a package)

from todo_api.migrations import upgrade  # noqa: E402

QUIET = {"RATE_LIMIT_ENABLED": "false", "MCP_ENABLED": "false"}
REDIS_URL = "redis://127.0.0.1:6379/15"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def register(http: httpx.AsyncClient, count: int) -> list[tuple[str, str]]:
    async def one(n: int) -> tuple[str, str]:
        body = {"name": f"s{n}", "email": f"streams-{uuid.uuid4().hex[:10]}@example.com", "password": "a long password"}
        response = await http.post("/api/auth/register", json=body)
        response.raise_for_status()
        return response.json()["user"]["id"], response.json()["access_token"]

    return list(await asyncio.gather(*(one(n) for n in range(count))))


async def idle_streams(base_url: str, pid: int, streams: int, idle: float) -> None:
    limits = httpx.Limits(max_connections=streams + 50, max_keepalive_connections=50)
    timeout = httpx.Timeout(30, read=None)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=timeout) as http:
        users = await register(http, (streams + 9) // 10)
        await http.get("/health")
        await asyncio.sleep(2)
        before = rss_mb(pid)
        opened: list[httpx.Response] = []
        started = time.monotonic()

        async def open_stream(token: str) -> None:
            request = http.build_request("GET", "/api/me/events", headers={"Authorization": f"Bearer {token}"})
            response = await http.send(request, stream=True)
            if response.status_code != 200:
                raise RuntimeError(f"stream refused: {response.status_code}")
            opened.append(response)

        await asyncio.gather(*(open_stream(users[n // 10][1]) for n in range(streams)))
        open_seconds = time.monotonic() - started
        await asyncio.sleep(3)
        cpu_before, wall_before = cpu_seconds(pid), time.monotonic()
        await asyncio.sleep(idle)
        cpu = (cpu_seconds(pid) - cpu_before) / (time.monotonic() - wall_before)
        after = rss_mb(pid)
        print(
            f"idle streams: {len(opened)} open in {open_seconds:.1f} s; server RSS {before:.1f} -> {after:.1f} MB "
            f"(+{after - before:.1f} MB, {(after - before) * 1024 / len(opened):.1f} kB a stream); "
            f"CPU while idle for {idle:.0f} s: {cpu * 100:.2f} % of a core (goal: under 50 MB, under 5 %)"
        )
        for response in opened:
            await response.aclose()


async def latency(first: str, second: str, users: int, rate: float, seconds: float) -> None:
    limits = httpx.Limits(max_connections=users + 100, max_keepalive_connections=100)
    timeout = httpx.Timeout(30, read=None)
    answered: dict[int, float] = {}
    arrived: dict[int, float] = {}
    async with (
        httpx.AsyncClient(base_url=first, limits=limits, timeout=timeout) as writer,
        httpx.AsyncClient(base_url=second, limits=limits, timeout=timeout) as reader,
    ):
        accounts = await register(writer, users)
        ready = 0

        async def listen(token: str) -> None:
            nonlocal ready
            headers = {"Authorization": f"Bearer {token}"}
            async with reader.stream("GET", "/api/me/events", headers=headers) as response:
                ready += 1
                event = None
                async for line in response.aiter_lines():
                    if line.startswith("event: "):
                        event = line[7:]
                    elif line.startswith("data: ") and event == "task.created":
                        arrived[json.loads(line[6:])["task"]["id"]] = time.monotonic()

        listeners = [asyncio.create_task(listen(token)) for _, token in accounts]
        while ready < users:
            await asyncio.sleep(0.05)

        async def create(n: int) -> None:
            _, token = accounts[n % users]
            response = await writer.post(
                "/api/me/tasks", json={"title": f"event {n}"}, headers={"Authorization": f"Bearer {token}"}
            )
            answered[response.json()["id"]] = time.monotonic()

        started = time.monotonic()
        writes: list[asyncio.Task[None]] = []
        total = int(rate * seconds)
        for n in range(total):
            await asyncio.sleep(max(0.0, started + n / rate - time.monotonic()))
            writes.append(asyncio.create_task(create(n)))
        await asyncio.gather(*writes)
        elapsed = time.monotonic() - started
        deadline = time.monotonic() + 10
        while len(arrived) < len(answered) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for listener in listeners:
            listener.cancel()
        await asyncio.gather(*listeners, return_exceptions=True)

    delays = [max(0.0, arrived[task_id] - at) * 1000 for task_id, at in answered.items() if task_id in arrived]
    missing = len(answered) - len(delays)
    print(
        f"latency: {len(answered)} creations in {elapsed:.1f} s ({len(answered) / elapsed:.0f}/s) over {users} users "
        f"through instance 1, events on instance 2: p50 {statistics.median(delays):.1f} ms, "
        f"p99 {percentile(delays, 0.99):.1f} ms, max {max(delays):.1f} ms; {missing} missing (goal: p99 under 100 ms)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", nargs="?", default="postgresql://root@127.0.0.1:5432/test", help="PostgreSQL server")
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--idle", type=float, default=30)
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--writes-per-second", type=float, default=200)
    parser.add_argument("--seconds", type=float, default=20)
    args = parser.parse_args()

    with private_database(args.url, False) as database_url:
        upgrade(database_url)
        with serve(database_url, **QUIET) as (base_url, pid):
            asyncio.run(idle_streams(base_url, pid, args.streams, args.idle))
        with ExitStack() as stack:
            first, _ = stack.enter_context(serve(database_url, REDIS_URL=REDIS_URL, **QUIET))
            second, _ = stack.enter_context(serve(database_url, REDIS_URL=REDIS_URL, **QUIET))
            asyncio.run(latency(first, second, args.users, args.writes_per_second, args.seconds))


if __name__ == "__main__":
    main()
