"""Root document, health checks, CORS and the OpenAPI docs."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from tests.conftest import LiveServer, make_settings
from tests.factories import PASSWORD, bearer, unique_email
from todo_api import system
from todo_api.auth.router import router as auth_router
from todo_api.main import create_app
from todo_api.tasks.router import router as tasks_router


def test_root_describes_the_service(client: TestClient) -> None:
    response = client.get("/")
    assert response.status_code == 200
    assert response.json() == {"name": "Todo API", "version": "1.0.0", "docs": "/docs"}


def test_health_is_200(client: TestClient) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "healthy"}


def test_ready_when_the_database_answers(client: TestClient) -> None:
    response = client.get("/health/ready")
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "database": "ok"}


def test_not_ready_when_the_database_is_unreachable() -> None:
    # A real PostgreSQL URL on a loopback port where nothing listens: connection refused.
    settings = make_settings("postgresql://root@127.0.0.1:9/nowhere")
    with TestClient(create_app(settings)) as client:
        ready = client.get("/health/ready")
        assert ready.status_code == 503
        assert ready.json() == {"detail": "Database unavailable"}
        assert ready.headers["retry-after"] == "5"
        assert client.get("/health").status_code == 200


def test_database_down_is_a_503_not_a_500() -> None:
    settings = make_settings("postgresql://root@127.0.0.1:9/nowhere")
    with TestClient(create_app(settings)) as client:
        response = client.post(
            "/api/auth/login", json={"email": "someone@example.com", "password": "whatever-password"}
        )
    assert response.status_code == 503
    assert response.json() == {"detail": "Service temporarily unavailable, please retry"}
    assert response.headers["retry-after"] == "5"


def test_cors_preflight_allows_configured_origin(client: TestClient) -> None:
    response = client.options(
        "/api/me/tasks",
        headers={
            "Origin": "http://localhost:3000",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        },
    )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "http://localhost:3000"
    assert response.headers["access-control-allow-credentials"] == "true"


def test_cors_rejects_other_origins(client: TestClient) -> None:
    response = client.options(
        "/api/me/tasks",
        headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "GET"},
    )
    assert response.status_code == 400
    assert "access-control-allow-origin" not in response.headers


def test_cors_exposes_paging_headers(client: TestClient) -> None:
    response = client.get("/health", headers={"Origin": "http://localhost:3000"})
    assert response.headers["access-control-allow-origin"] == "http://localhost:3000"
    exposed = {h.strip().lower() for h in response.headers["access-control-expose-headers"].split(",")}
    assert {"x-total-count", "link", "etag"} <= exposed


def test_openapi_and_docs(client: TestClient) -> None:
    spec = client.get("/openapi.json")
    assert spec.status_code == 200
    paths = spec.json()["paths"]
    assert {"/api/auth/register", "/api/auth/login", "/api/auth/token", "/api/auth/me"} <= set(paths)
    assert {
        "/api/{user_id}/tasks",
        "/api/{user_id}/tasks/{task_id}",
        "/api/{user_id}/tasks/{task_id}/complete",
    } <= set(paths)
    docs = client.get("/docs")
    assert docs.status_code == 200
    assert "swagger" in docs.text.lower()


def test_no_other_route_can_be_taken_for_a_task_route(client: TestClient) -> None:
    """The task routes come first (`main.create_app`), which is only safe while no other path matches them."""
    task_routes = [route for route in tasks_router.routes if isinstance(route, APIRoute)]
    others = [route for route in [*auth_router.routes, *system.router.routes] if isinstance(route, APIRoute)]
    assert len(task_routes) >= 10 and len(others) >= 15
    documented = list(client.get("/openapi.json").json()["paths"])
    task_paths = list(dict.fromkeys(route.path for route in task_routes))
    assert documented[: len(task_paths)] == task_paths
    for other in others:
        path = other.path.replace("{session_id}", "some-id")
        assert [task.path for task in task_routes if task.path_regex.match(path)] == [], other.path


def test_unknown_route_is_a_json_404(client: TestClient) -> None:
    response = client.get("/nope")
    assert response.status_code == 404
    assert response.json() == {"detail": "Not Found"}


def test_wrong_method_is_a_json_405(client: TestClient) -> None:
    response = client.delete("/health")
    assert response.status_code == 405
    assert response.json() == {"detail": "Method Not Allowed"}


def test_more_simultaneous_requests_than_connections_all_succeed(database_url: str) -> None:
    # One pooled connection and more requests at once than worker threads. Admitted without limit, threads
    # waited for the connection while the request holding it waited for a thread: a stall, then 503s when the
    # pool gave up. Requests beyond the pool's size must wait their turn instead.
    requests = 64
    app = create_app(make_settings(database_url, DB_POOL_SIZE=1, DB_MAX_OVERFLOW=0))
    with LiveServer(app) as server, server.client() as http:
        registered = http.post(
            "/api/auth/register", json={"name": "Crowd", "email": unique_email("crowd"), "password": PASSWORD}
        )
        assert registered.status_code == 201, registered.text
        headers = bearer(registered.json()["access_token"])
        barrier = threading.Barrier(requests)

        def fetch(_: int) -> int:
            barrier.wait(timeout=30)
            return http.get("/api/me/tasks", headers=headers).status_code

        with ThreadPoolExecutor(max_workers=requests) as pool:
            statuses = list(pool.map(fetch, range(requests)))
    assert statuses == [200] * requests
