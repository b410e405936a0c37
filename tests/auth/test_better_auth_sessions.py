"""Better Auth session tokens (bearer plugin): signed or raw, looked up in Better Auth's own tables."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine
from sqlmodel import Session

from tests.auth.better_auth_frontend import (
    AppFactory,
    BetterAuthTables,
    JWKSServer,
    me,
    new_key,
    new_session_token,
    plugin_payload,
    sign,
    signed_session_token,
)
from tests.conftest import _create_private_postgres
from tests.factories import UserFactory, bearer, better_auth_token, unique_email
from tests.tasks.helpers import Actor, assert_not_found, create_task, list_tasks, tasks_url
from todo_api.config import normalize_database_url

UNAUTHORIZED = {"detail": "Could not validate credentials"}


@dataclass
class BetterAuthDatabase:
    url: str
    tables: BetterAuthTables


def _scratch_database(directory: Path, name: str) -> tuple[str, Callable[[], None]]:
    """A private database: on the PostgreSQL server under test, or a SQLite file."""
    requested = os.environ.get("TEST_DATABASE_URL", "")
    if requested.startswith(("postgres://", "postgresql")):
        return _create_private_postgres(requested)
    return f"sqlite:///{directory / name}", lambda: None


@pytest.fixture(scope="module")
def better_auth_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BetterAuthDatabase]:
    """Better Auth's database (its `user` and `session` tables), separate from ours; rows really commit."""
    url, drop = _scratch_database(tmp_path_factory.mktemp("better-auth"), "better-auth.db")
    engine = create_engine(normalize_database_url(url))
    yield BetterAuthDatabase(url=url, tables=BetterAuthTables(engine).create())
    engine.dispose()
    drop()


@pytest.fixture
def apps(database_url: str, db_session: Session) -> Iterator[AppFactory]:
    with AppFactory(database_url, db_session) as factory:
        yield factory


@pytest.fixture
def tables(better_auth_db: BetterAuthDatabase) -> BetterAuthTables:
    return better_auth_db.tables


@pytest.fixture
def client(apps: AppFactory, better_auth_db: BetterAuthDatabase) -> TestClient:
    return apps.client(BETTER_AUTH_SESSION_LOOKUP=True, BETTER_AUTH_DATABASE_URL=better_auth_db.url)


def assert_unauthorized(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.json() == UNAUTHORIZED
    assert response.headers["www-authenticate"] == "Bearer"


def test_a_signed_session_token_is_accepted(client: TestClient, tables: BetterAuthTables) -> None:
    user = tables.add_user(name="Katherine Johnson", email=unique_email("KJ").upper())
    token = signed_session_token(tables.add_session(user))

    response = me(client, token)

    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["id"], body["email"], body["name"]) == (user.id, user.email.lower(), "Katherine Johnson")


def test_the_url_encoded_cookie_value_is_accepted(client: TestClient, tables: BetterAuthTables) -> None:
    user = tables.add_user()
    signed = signed_session_token(tables.add_session(user))
    encoded = quote(signed, safe="")
    assert encoded != signed  # `+`, `/` or at least `=` are escaped, as in the cookie

    assert me(client, encoded).json()["id"] == user.id


def test_a_raw_session_token_is_accepted(client: TestClient, tables: BetterAuthTables) -> None:
    user = tables.add_user()
    assert me(client, tables.add_session(user)).json()["id"] == user.id


def test_signatures_can_be_required(
    apps: AppFactory, better_auth_db: BetterAuthDatabase, tables: BetterAuthTables
) -> None:
    client = apps.client(
        BETTER_AUTH_SESSION_LOOKUP=True,
        BETTER_AUTH_DATABASE_URL=better_auth_db.url,
        BETTER_AUTH_REQUIRE_SIGNED_SESSION=True,
    )
    user = tables.add_user()
    raw = tables.add_session(user)

    assert_unauthorized(me(client, raw))
    assert me(client, signed_session_token(raw)).json()["id"] == user.id


def _flip_signature(signed: str) -> str:
    """The same token with the last significant character of its signature changed (never to itself)."""
    last = signed[-2]
    return signed[:-2] + ("E" if last == "A" else "A") + "="


@pytest.mark.parametrize(
    "tamper",
    [
        lambda raw: signed_session_token(raw, secret="another-secret-that-is-32-characters-or-more"),
        lambda raw: _flip_signature(signed_session_token(raw)),
        lambda raw: signed_session_token(raw).rstrip("="),
        lambda raw: signed_session_token(raw) + "=",
        lambda raw: raw + "." + signed_session_token(new_session_token()).split(".")[1],
        lambda raw: "." + signed_session_token(raw).split(".")[1],
        lambda raw: raw[:31],
        lambda raw: raw + "x",
        lambda raw: raw[:31] + "-",
        lambda raw: quote(signed_session_token(raw), safe="") + "%zz",
    ],
    ids=[
        "other-secret",
        "changed-signature",
        "unpadded",
        "too-long-signature",
        "signature-of-another-token",
        "no-token",
        "raw-too-short",
        "raw-too-long",
        "raw-bad-character",
        "bad-escape",
    ],
)
def test_forged_or_malformed_session_tokens_are_refused(
    client: TestClient, tables: BetterAuthTables, tamper: Callable[[str], str]
) -> None:
    raw = tables.add_session(tables.add_user())
    assert_unauthorized(me(client, tamper(raw)))


def test_an_unknown_session_is_refused(client: TestClient) -> None:
    assert_unauthorized(me(client, signed_session_token(new_session_token())))
    assert_unauthorized(me(client, new_session_token()))


def test_an_expired_session_is_refused(client: TestClient, tables: BetterAuthTables) -> None:
    user = tables.add_user()
    assert_unauthorized(me(client, signed_session_token(tables.add_session(user, expires_in=-120))))
    # Within JWT_LEEWAY (30 s) of its expiry a session still counts, like a JWT.
    assert me(client, signed_session_token(tables.add_session(user, expires_in=-5))).status_code == 200


def test_sign_out_takes_effect_on_the_next_request(client: TestClient, tables: BetterAuthTables) -> None:
    raw = tables.add_session(tables.add_user())
    token = signed_session_token(raw)
    assert me(client, token).status_code == 200

    tables.delete_session(raw)

    assert_unauthorized(me(client, token))


def test_name_and_email_follow_better_auths_user_row(client: TestClient, tables: BetterAuthTables) -> None:
    user = tables.add_user(name="Before")
    token = signed_session_token(tables.add_session(user))
    assert me(client, token).json()["name"] == "Before"

    user.name, user.email = "After", unique_email("after")
    tables.update_user(user)

    body = me(client, token).json()
    assert (body["id"], body["name"], body["email"]) == (user.id, "After", user.email)


def test_the_email_of_another_account_is_refused(client: TestClient, tables: BetterAuthTables) -> None:
    local = UserFactory(client).create()
    intruder = tables.add_user(email=local.email.upper())

    response = me(client, signed_session_token(tables.add_session(intruder)))

    assert response.status_code == 401
    assert response.json() == {"detail": "The email in this token belongs to another account"}


def test_session_lookup_is_off_by_default(
    apps: AppFactory, better_auth_db: BetterAuthDatabase, tables: BetterAuthTables
) -> None:
    client = apps.client(BETTER_AUTH_DATABASE_URL=better_auth_db.url)
    raw = tables.add_session(tables.add_user())

    assert_unauthorized(me(client, signed_session_token(raw)))
    assert_unauthorized(me(client, raw))


def test_every_task_route_with_a_session_token(client: TestClient, tables: BetterAuthTables) -> None:
    first, second = tables.add_user(), tables.add_user()
    alice = Actor(id=first.id, headers=bearer(signed_session_token(tables.add_session(first))))
    bob = Actor(id=second.id, headers=bearer(tables.add_session(second)))

    task = create_task(client, alice, title="Water the plants")
    url = tasks_url(alice.id, task["id"])
    assert client.get(url, headers=alice.headers).status_code == 200
    assert client.put(url, headers=alice.headers, json={"title": "Water the ferns"}).status_code == 200
    assert client.patch(url, headers=alice.headers, json={"priority": "low"}).json()["priority"] == "low"
    assert client.patch(tasks_url("me", task["id"], complete=True), headers=alice.headers).json()["completed"]

    assert_not_found(client.get(url, headers=bob.headers))
    assert_not_found(client.patch(tasks_url(bob.id, task["id"]), headers=bob.headers, json={"title": "x"}))
    assert list_tasks(client, bob) == []
    assert client.delete(url, headers=alice.headers).status_code == 204


def test_all_three_token_kinds_reach_the_same_user(
    apps: AppFactory, better_auth_db: BetterAuthDatabase, tables: BetterAuthTables
) -> None:
    key = new_key("EdDSA")
    frontend = JWKSServer([key])
    try:
        client = apps.client(
            BETTER_AUTH_URL=frontend.url,
            BETTER_AUTH_SESSION_LOOKUP=True,
            BETTER_AUTH_DATABASE_URL=better_auth_db.url,
        )
        user = tables.add_user()
        session_token = signed_session_token(tables.add_session(user))
        plugin_token = sign(plugin_payload(user, iss=frontend.url, aud=frontend.url), key)
        secret_token = better_auth_token(user.id, email=user.email, name=user.name)

        task = create_task(client, Actor(id=user.id, headers=bearer(session_token)))
        for token in (session_token, plugin_token, secret_token):
            actor = Actor(id=user.id, headers=bearer(token))
            assert [t["id"] for t in list_tasks(client, actor)] == [task["id"]]
            assert client.get(tasks_url(user.id, task["id"]), headers=actor.headers).status_code == 200
    finally:
        frontend.stop()


def test_better_auth_tables_in_our_own_database(apps: AppFactory, db_session: Session) -> None:
    """The seeds' layout: one database holds both schemas (BETTER_AUTH_DATABASE_URL unset)."""
    tables = BetterAuthTables(db_session.connection()).create()  # rolled back with the test
    client = apps.client(BETTER_AUTH_SESSION_LOOKUP=True)
    user = tables.add_user()
    raw = tables.add_session(user)

    assert me(client, signed_session_token(raw)).json()["id"] == user.id
    assert me(client, raw).json()["id"] == user.id
    assert_unauthorized(me(client, tables.add_session(user, expires_in=-3600)))


@pytest.mark.parametrize(
    ("stored", "valid"),
    [
        ("2999-01-01T00:00:00.000Z", True),
        ("2000-01-01T00:00:00.000Z", False),
        ("2999-01-01 00:00:00", True),
        (32503680000000, True),  # epoch milliseconds (Prisma, Drizzle timestamp_ms)
        (946684800000, False),
        (32503680000, True),  # epoch seconds (Drizzle timestamp)
        (946684800, False),
        ("tomorrow", False),
    ],
)
def test_expiry_as_each_adapter_stores_it(apps: AppFactory, tmp_path: Path, stored: object, valid: bool) -> None:
    url = f"sqlite:///{tmp_path / 'adapters.db'}"
    engine = create_engine(url)
    try:
        tables = BetterAuthTables(engine).create()
        user = tables.add_user()
        raw = tables.add_session(user, expires_at=stored)
        client = apps.client(BETTER_AUTH_SESSION_LOOKUP=True, BETTER_AUTH_DATABASE_URL=url)

        response = me(client, raw)

        assert response.status_code == (200 if valid else 401), response.text
    finally:
        engine.dispose()


def test_a_database_without_better_auth_tables_gives_401(apps: AppFactory, tmp_path: Path) -> None:
    url, drop = _scratch_database(tmp_path, "empty.db")
    try:
        client = apps.client(BETTER_AUTH_SESSION_LOOKUP=True, BETTER_AUTH_DATABASE_URL=url)
        assert_unauthorized(me(client, signed_session_token(new_session_token())))
        # The app still works for every other kind of token.
        assert me(client, better_auth_token(email=unique_email())).status_code == 200
    finally:
        drop()


def test_better_auths_database_down_is_a_503(apps: AppFactory) -> None:
    client = apps.client(
        BETTER_AUTH_SESSION_LOOKUP=True, BETTER_AUTH_DATABASE_URL="postgresql://root@127.0.0.1:9/nowhere"
    )
    response = me(client, signed_session_token(new_session_token()))
    assert response.status_code == 503
    assert response.json() == {"detail": "Service temporarily unavailable, please retry"}


def test_a_session_user_cannot_log_in_with_a_password_here(client: TestClient, tables: BetterAuthTables) -> None:
    """A Better Auth user arriving by session token is a user like any other: no password, no local login."""
    user = tables.add_user(email=unique_email("nopass"))
    assert me(client, tables.add_session(user)).status_code == 200

    login = client.post("/api/auth/login", json={"email": user.email, "password": "whatever password"})

    assert login.status_code == 401


def test_logout_refuses_that_session_token_only(client: TestClient, tables: BetterAuthTables) -> None:
    user = tables.add_user()
    first, second = (signed_session_token(tables.add_session(user)) for _ in range(2))
    assert me(client, first).status_code == 200

    assert client.post("/api/auth/logout", headers=bearer(first)).status_code == 204

    assert_unauthorized(me(client, first))
    assert me(client, second).status_code == 200


def test_logout_all_refuses_better_auth_sessions_created_before_it(
    client: TestClient, tables: BetterAuthTables
) -> None:
    user = tables.add_user()
    old = signed_session_token(tables.add_session(user))
    assert me(client, old).status_code == 200

    assert client.post("/api/auth/logout-all", headers=bearer(old)).status_code == 204

    assert_unauthorized(me(client, old))
    # A session the frontend creates afterwards (sign-in again) works, even within the same second.
    fresh = signed_session_token(tables.add_session(user))
    assert me(client, fresh).status_code == 200
