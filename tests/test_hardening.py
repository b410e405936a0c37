"""Hostile and malformed input, response headers, docs switch and the OpenAPI contract."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlmodel import Session

from tests.conftest import LiveServer, make_settings, use_session
from tests.factories import UserFactory, bearer
from todo_api.config import Settings
from todo_api.main import create_app

AppFactory = Callable[..., TestClient]


@pytest.fixture
def app_with(database_url: str, db_session: Session) -> Iterator[AppFactory]:
    apps: list[FastAPI] = []

    def build(**overrides: object) -> TestClient:
        app = create_app(make_settings(database_url, **overrides))
        use_session(app, db_session)
        apps.append(app)
        return TestClient(app)

    yield build


# ------------------------------------------------------------------------------------------------ bodies


def _task_body_of_size(size: int) -> bytes:
    skeleton = json.dumps({"title": "big", "description": ""}).encode()
    padding = size - len(skeleton)
    return json.dumps({"title": "big", "description": "", "pad": "x" * (padding - len(', "pad": ""'))}).encode()


def test_body_of_exactly_the_limit_is_accepted(app_with: AppFactory) -> None:
    client = app_with(MAX_BODY_BYTES=4096)
    user = UserFactory(client).create()
    body = _task_body_of_size(4096)
    assert len(body) == 4096
    response = client.post("/api/me/tasks", content=body, headers={**user.headers, "Content-Type": "application/json"})
    assert response.status_code == 201, response.text


def test_body_over_the_limit_is_413(app_with: AppFactory) -> None:
    client = app_with(MAX_BODY_BYTES=4096)
    user = UserFactory(client).create()
    body = _task_body_of_size(4097)
    response = client.post("/api/me/tasks", content=body, headers={**user.headers, "Content-Type": "application/json"})
    assert response.status_code == 413
    assert response.json() == {"detail": "Request body too large"}


def test_chunked_body_over_the_limit_is_413(app_with: AppFactory) -> None:
    client = app_with(MAX_BODY_BYTES=4096)
    user = UserFactory(client).create()
    sent: list[int] = []

    def chunks() -> Iterator[bytes]:
        for _ in range(1000):  # 1 MB in 1 KB chunks, no Content-Length
            sent.append(1)
            yield b" " * 1024

    response = client.post(
        "/api/me/tasks", content=chunks(), headers={**user.headers, "Content-Type": "application/json"}
    )
    assert response.status_code == 413
    assert response.json() == {"detail": "Request body too large"}


def test_default_limit_is_one_mebibyte(client: TestClient, users: UserFactory) -> None:
    user = users.create()
    response = client.post(
        "/api/me/tasks", content=b" " * (1048576 + 1), headers={**user.headers, "Content-Type": "application/json"}
    )
    assert response.status_code == 413


def test_login_body_over_the_limit_is_413(client: TestClient) -> None:
    response = client.post(
        "/api/auth/login", content=b'{"email": "' + b"a" * 1048576 + b'"}', headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413


def test_deeply_nested_json_is_a_quick_4xx(client: TestClient, users: UserFactory) -> None:
    user = users.create()
    body = b"[" * 10000 + b"]" * 10000
    response = client.post("/api/me/tasks", content=body, headers={**user.headers, "Content-Type": "application/json"})
    assert 400 <= response.status_code < 500
    assert "detail" in response.json()


def test_oversized_token_is_401_without_parsing(client: TestClient) -> None:
    response = client.get("/api/auth/me", headers=bearer("a" * 8193))
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json() == {"detail": "Could not validate credentials"}


def test_oversized_headers_are_refused_by_the_server(settings: Settings) -> None:
    with LiveServer(create_app(settings)) as server, server.client() as http:
        response = http.get("/health", headers={"X-Big": "x" * 200_000})
        assert response.status_code == 431
        assert response.json() == {"detail": "Request header fields too large"}
        assert http.get("/health").status_code == 200


# ------------------------------------------------------------------------------------------------ headers


def _assert_security_headers(response: httpx.Response) -> None:
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"


def test_security_headers_on_every_kind_of_response(client: TestClient, users: UserFactory) -> None:
    user = users.create()
    responses = [
        client.get("/health"),
        client.get("/nope"),
        client.get("/api/auth/me"),
        client.get("/api/me/tasks", headers=user.headers),
        client.options(
            "/api/me/tasks",
            headers={"Origin": "http://localhost:3000", "Access-Control-Request-Method": "GET"},
        ),
    ]
    for response in responses:
        _assert_security_headers(response)
    assert "strict-transport-security" not in responses[0].headers


def test_cache_control(client: TestClient, users: UserFactory) -> None:
    user = users.create()
    assert (
        client.post("/api/auth/login", json={"email": user.email, "password": user.password}).headers["cache-control"]
        == "no-store"
    )
    assert client.get("/api/auth/me", headers=user.headers).headers["cache-control"] == "no-store"
    assert client.get("/api/me/tasks").headers["cache-control"] == "no-store"  # a 401
    assert client.get("/api/me/tasks", headers=user.headers).headers["cache-control"] == "private, no-cache"
    created = client.post("/api/me/tasks", headers=user.headers, json={"title": "t"})
    assert created.headers["cache-control"] == "private, no-cache"
    assert "cache-control" not in client.get("/health").headers


def test_hsts_when_configured(app_with: AppFactory) -> None:
    client = app_with(HSTS_SECONDS=31536000)
    assert client.get("/health").headers["strict-transport-security"] == "max-age=31536000; includeSubDomains"


def test_request_id_is_echoed_when_valid(client: TestClient) -> None:
    assert client.get("/health", headers={"X-Request-ID": "abc.DEF_123-x"}).headers["x-request-id"] == "abc.DEF_123-x"


@pytest.mark.parametrize("given", ["", "has space", "x" * 129, "semi;colon", "ünï"])
def test_invalid_request_id_is_replaced(client: TestClient, given: str) -> None:
    headers = {"X-Request-ID": given.encode()} if given else {}
    returned = client.get("/health", headers=headers).headers["x-request-id"]
    assert returned != given
    assert len(returned) == 32 and all(c in "0123456789abcdef" for c in returned)


def test_request_ids_differ_between_requests(client: TestClient) -> None:
    assert client.get("/health").headers["x-request-id"] != client.get("/health").headers["x-request-id"]


# ------------------------------------------------------------------------------------------------ docs


def test_docs_are_off_by_default_in_production(app_with: AppFactory) -> None:
    client = app_with(ENVIRONMENT="production")
    for path in ("/docs", "/redoc", "/openapi.json"):
        assert client.get(path).status_code == 404


def test_docs_can_be_switched(app_with: AppFactory) -> None:
    assert app_with(ENVIRONMENT="production", DOCS_ENABLED=True).get("/openapi.json").status_code == 200
    off = app_with(DOCS_ENABLED=False)
    for path in ("/docs", "/redoc", "/openapi.json"):
        assert off.get(path).status_code == 404


def test_openapi_operation_ids_are_readable(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    ids = {op["operationId"] for path in spec["paths"].values() for op in path.values()}
    assert {"list_tasks", "create_task", "get_task", "update_task", "delete_task", "complete_task", "login"} <= ids
    assert len(ids) == sum(len(path) for path in spec["paths"].values())


def test_openapi_documents_error_statuses_with_schemas(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    operation = spec["paths"]["/api/{user_id}/tasks/{task_id}"]["get"]
    for status in ("401", "404", "422", "503"):
        schema = operation["responses"][status]["content"]["application/json"]["schema"]
        assert schema["$ref"].startswith("#/components/schemas/")
    create = spec["paths"]["/api/{user_id}/tasks"]["post"]["responses"]
    assert "413" in create
