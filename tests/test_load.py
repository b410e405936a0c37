"""Many concurrent requests on one process: every one succeeds, none waits on a deadlocked pool."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.conftest import LiveServer
from tests.factories import PASSWORD, unique_email

CONCURRENCY = 256


def test_256_concurrent_list_requests_all_succeed(live_server: LiveServer) -> None:
    with live_server.client() as http:
        registered = http.post(
            "/api/auth/register", json={"name": "Load", "email": unique_email("load"), "password": PASSWORD}
        )
        assert registered.status_code == 201, registered.text
        headers = {"Authorization": f"Bearer {registered.json()['access_token']}"}
        for n in range(20):
            assert http.post("/api/me/tasks", headers=headers, json={"title": f"task {n}"}).status_code == 201

    start = threading.Barrier(CONCURRENCY)
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)

    with httpx.Client(base_url=live_server.url, timeout=60, limits=limits) as shared:

        def one(_: int) -> tuple[int, int]:
            start.wait()
            response = shared.get("/api/me/tasks", headers=headers)
            return response.status_code, len(response.json()) if response.status_code == 200 else -1

        with ThreadPoolExecutor(max_workers=CONCURRENCY) as pool:
            results = list(pool.map(one, range(CONCURRENCY)))

    assert results == [(200, 20)] * CONCURRENCY
