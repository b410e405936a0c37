"""Property-based fuzz of the whole OpenAPI document with schemathesis, as one real user next to another.

Every operation gets generated requests (bounded: a few dozen examples each) from user A, with `{user_id}` set to
`me`, A's own id or user B's id. Checks: no 5xx, every status code and body as documented, and nothing of B's
(id, email, task titles) ever in a response to A.
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlmodel import Session

from tests.conftest import make_settings, use_session
from tests.factories import TEST_SECRET, UserFactory
from todo_api.main import create_app

USER_A = f"fuzz-a-{uuid.uuid4().hex[:8]}"
MARKER = f"B-PRIVATE-{uuid.uuid4().hex}"


class Victim:
    id = ""
    email = ""
    task_ids: list[int] = []  # noqa: RUF012


A_TASK_IDS: list[int] = []


VICTIM = Victim()
_path_owner = itertools.cycle(["me", "A", "B"])
_task_choice = itertools.cycle(["generated", "A", "B"])


def token_for_a() -> str:
    """A fresh Better Auth style token each call, so logout/logout-all/delete from the fuzzer cannot lock A out."""
    now = int(time.time())
    claims = {"sub": USER_A, "email": f"{USER_A}@example.com", "name": "Fuzz A", "iat": now, "exp": now + 600}
    return jwt.encode(claims, TEST_SECRET, algorithm="HS256")


@pytest.fixture
def fuzz_app(app: FastAPI, db_session: Session) -> Iterator[FastAPI]:
    use_session(app, db_session)
    with TestClient(app) as client:
        victim = UserFactory(client).create()
        VICTIM.task_ids = []
        for n in range(3):
            created = client.post("/api/me/tasks", headers=victim.headers, json={"title": f"{MARKER}-{n}"})
            assert created.status_code == 201
            VICTIM.task_ids.append(created.json()["id"])
        VICTIM.id, VICTIM.email = victim.id, victim.email
        own = client.post("/api/me/tasks", headers={"Authorization": f"Bearer {token_for_a()}"}, json={"title": "A's"})
        assert own.status_code == 201
        A_TASK_IDS[:] = [own.json()["id"]]
    yield app
    app.dependency_overrides.clear()


def _operations() -> list[tuple[str, str]]:
    # Only the document is read here (no database is touched): the app is built to list its operations.
    document = create_app(make_settings("sqlite:///./never-opened.db")).openapi()
    return [(path, method) for path, item in document["paths"].items() for method in item]


@pytest.mark.parametrize(("path", "method"), _operations())
def test_fuzz_whole_api(fuzz_app: FastAPI, path: str, method: str) -> None:
    operation = schemathesis.openapi.from_asgi("/openapi.json", fuzz_app)[path][method.upper()]

    @given(case=operation.as_strategy())
    @settings(
        max_examples=30,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def check(case: Any) -> None:
        if "user_id" in (case.path_parameters or {}):
            owner = next(_path_owner)
            case.path_parameters["user_id"] = {"me": "me", "A": USER_A, "B": VICTIM.id}[owner]
        if "task_id" in (case.path_parameters or {}):
            choice = next(_task_choice)
            if choice != "generated":
                case.path_parameters["task_id"] = (A_TASK_IDS if choice == "A" else VICTIM.task_ids)[0]
        headers = dict(case.headers or {})
        headers["Authorization"] = f"Bearer {token_for_a()}"
        response = case.call_and_validate(
            headers=headers,
            checks=[not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance],
        )
        body = response.text
        for secret in (VICTIM.id, VICTIM.email, MARKER):
            assert secret not in body, f"{case.method} {case.formatted_path} leaked another user's data"
        if case.path_parameters and case.path_parameters.get("user_id") == VICTIM.id:
            assert response.status_code in {400, 401, 404, 413, 422}, response.status_code

    check()
