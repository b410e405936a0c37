"""Sessions and revocation: refresh-token rotation and reuse detection, logout, logout-all, session listing."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session

from tests.auth.helpers import (
    AUTH_KEYS,
    EXPIRES_IN,
    INVALID_REFRESH,
    LOGOUT,
    LOGOUT_ALL,
    NOT_AUTHENTICATED,
    SESSION_KEYS,
    SESSIONS,
    TOKEN_PAIR_KEYS,
    Login,
    assert_refresh_refused,
    assert_refused,
    assert_session_alive,
    assert_session_dead,
    assert_unauthorized,
    assert_validation_error,
    assert_works,
    ba_headers,
    better_auth_user,
    claims_of,
    expire_session,
    first_session,
    list_sessions,
    login,
    move_back,
    refresh,
    refreshed,
    seconds_ago,
    session_id_of,
)
from tests.factories import UserFactory, bearer, better_auth_token
from tests.tasks.helpers import assert_utc_timestamp
from todo_api.security import hash_token

SESSION_NOT_FOUND = {"detail": "Session not found"}

# --------------------------------------------------------------------------------------------- tokens


def test_register_and_login_return_a_refresh_token_and_session_bound_access_tokens(
    api: TestClient, users: UserFactory
) -> None:
    user = users.create()
    assert set(user.body) == AUTH_KEYS
    registered = first_session(user)
    second = login(api, user.email)

    for session in (registered, second):
        assert isinstance(session.refresh_token, str) and len(session.refresh_token) >= 32
        assert session.refresh_token not in session.access_token
        assert claims_of(session.access_token)["sub"] == user.id
    assert registered.refresh_token != second.refresh_token
    assert registered.session_id != second.session_id
    listed = {row["id"] for row in list_sessions(api, second.headers)}
    assert listed == {registered.session_id, second.session_id}


def test_refresh_rotates_the_refresh_token(api: TestClient, users: UserFactory) -> None:
    user = users.create()
    original = first_session(user)

    response = refresh(api, original.refresh_token)

    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == TOKEN_PAIR_KEYS
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == EXPIRES_IN
    assert body["refresh_token"] != original.refresh_token
    assert session_id_of(body["access_token"]) == original.session_id
    assert claims_of(body["access_token"])["sub"] == user.id
    rotated = Login(access_token=body["access_token"], refresh_token=body["refresh_token"], body=body)
    assert assert_works(api, rotated.headers)["id"] == user.id
    # The new refresh token works in turn, and rotates again.
    again = refreshed(api, rotated.refresh_token)
    assert again.refresh_token not in {original.refresh_token, rotated.refresh_token}
    assert_works(api, again.headers)


def test_unknown_refresh_token_is_401(api: TestClient) -> None:
    assert_unauthorized(refresh(api, "not-a-refresh-token-we-ever-issued"), INVALID_REFRESH)


def test_reusing_a_rotated_refresh_token_kills_the_whole_session(api: TestClient, users: UserFactory) -> None:
    user = users.create()
    other = login(api, user.email)
    stolen = first_session(user)
    rotated = refreshed(api, stolen.refresh_token)

    assert_unauthorized(refresh(api, stolen.refresh_token), INVALID_REFRESH)

    # The newest refresh token and every access token of that session died with it.
    assert_refresh_refused(api, rotated.refresh_token)
    assert_refused(api, rotated.headers)
    assert_refused(api, stolen.headers)
    # Another session of the same user is not affected.
    assert_session_alive(api, other)


def test_refresh_after_logout_is_401(api: TestClient, users: UserFactory) -> None:
    session = first_session(users.create())
    assert api.post(LOGOUT, headers=session.headers).status_code == 204
    assert_refresh_refused(api, session.refresh_token)


def test_refresh_of_an_expired_session_is_401(api: TestClient, users: UserFactory, db_session: Session) -> None:
    user = users.create()
    expired, live = first_session(user), login(api, user.email)
    expire_session(db_session, expired.session_id)

    assert_refresh_refused(api, expired.refresh_token)
    assert expired.session_id not in {row["id"] for row in list_sessions(api, live.headers)}
    refreshed(api, live.refresh_token)


SECRET_REFRESH = "refresh-secret-" + "r" * 250


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"refresh_token": ""},
        {"refresh_token": None},
        {"refresh_token": SECRET_REFRESH},
        {"refresh_token": "refresh-secret-with-a-\x00-nul"},
    ],
    ids=["missing", "empty", "null", "too-long", "nul"],
)
def test_refresh_validation_is_422_without_echoing_the_token(api: TestClient, payload: dict[str, Any]) -> None:
    response = api.post("/api/auth/refresh", json=payload)
    errors = assert_validation_error(response, "refresh-secret")
    assert ["body", "refresh_token"] in [error["loc"] for error in errors]


# --------------------------------------------------------------------------------------------- logout


def test_logout_ends_only_the_session_of_the_token_used(api: TestClient, users: UserFactory) -> None:
    user = users.create()
    leaving, staying = first_session(user), login(api, user.email)

    response = api.post(LOGOUT, headers=leaving.headers)

    assert response.status_code == 204
    assert response.content == b""
    assert_session_dead(api, leaving)
    assert_session_alive(api, staying)


# Task reads check the session in their own statement; whatever that statement finds (the task, nothing, a page,
# an empty page, a page past the end, a page that needs a count), a logged-out token is a 401, never data or a 404.
TASK_READS = [
    "/tasks/{task}",
    "/tasks/{missing}",
    "/tasks/0",
    "/tasks",
    "/tasks?limit=1",
    "/tasks?limit=1&offset=1",
    "/tasks?offset=50",
    "/tasks?search=nothing-matches-this",
    "/tasks?trashed=true",
    "/stats",
]


@pytest.mark.parametrize("path", TASK_READS)
def test_task_reads_refuse_a_logged_out_token_whatever_they_find(
    api: TestClient, users: UserFactory, path: str
) -> None:
    user = users.create()
    leaving, staying = first_session(user), login(api, user.email)
    tasks = [api.post(f"/api/{user.id}/tasks", headers=staying.headers, json={"title": f"t{i}"}) for i in range(2)]
    assert [response.status_code for response in tasks] == [201, 201]
    url = f"/api/{user.id}" + path.format(task=tasks[0].json()["id"], missing=tasks[1].json()["id"] + 1000)
    before = api.get(url, headers=leaving.headers)
    assert before.status_code in (200, 404), before.text

    assert api.post(LOGOUT, headers=leaving.headers).status_code == 204

    assert_unauthorized(api.get(url, headers=leaving.headers))
    assert_unauthorized(api.get(url.replace(user.id, "me"), headers=leaving.headers))
    after = api.get(url, headers=staying.headers)
    assert (after.status_code, after.content) == (before.status_code, before.content)


@pytest.mark.parametrize("key", [None, "retry-1"])
def test_a_logged_out_token_creates_nothing(api: TestClient, users: UserFactory, key: str | None) -> None:
    """A create checks the session in its own INSERT (without an Idempotency-Key): nothing is stored either way."""
    user = users.create()
    leaving, staying = first_session(user), login(api, user.email)
    assert api.post(LOGOUT, headers=leaving.headers).status_code == 204
    headers = leaving.headers if key is None else {**leaving.headers, "Idempotency-Key": key}

    assert_unauthorized(api.post(f"/api/{user.id}/tasks", headers=headers, json={"title": "After logout"}))
    assert_unauthorized(api.post("/api/me/tasks", headers=headers, json={"title": "After logout"}))

    assert api.get(f"/api/{user.id}/tasks", headers=staying.headers).json() == []
    stats = api.get(f"/api/{user.id}/stats", headers=staying.headers).json()
    assert stats["total"] == 0


@pytest.mark.parametrize(
    "sid",
    ["none", "not-a-string", "unknown", "another-users-session"],
)
def test_a_signed_token_of_ours_without_a_live_session_of_its_own_is_refused(
    api: TestClient, users: UserFactory, sid: str
) -> None:
    """Validly signed with our issuer, but its `sid` is missing, malformed, unknown or another user's: the reads and
    the create that check the session inside their own statement refuse it like every other route."""
    user, other = users.create(), users.create()
    created = api.post(f"/api/{user.id}/tasks", headers=user.headers, json={"title": "Mine"})
    assert created.status_code == 201, created.text
    claims: dict[str, Any] = {
        "none": {},
        "not-a-string": {"sid": 123},
        "unknown": {"sid": str(uuid.uuid4())},
        "another-users-session": {"sid": session_id_of(other.token)},
    }[sid]
    forged = bearer(better_auth_token(user.id, iss="todo-api", **claims))

    for path in (f"/tasks/{created.json()['id']}", "/tasks", "/tasks?offset=5", "/stats"):
        assert_unauthorized(api.get(f"/api/{user.id}{path}", headers=forged))
    assert_unauthorized(api.post(f"/api/{user.id}/tasks", headers=forged, json={"title": "Forged"}))
    assert_unauthorized(api.get("/api/auth/me", headers=forged))

    assert [task["title"] for task in api.get(f"/api/{user.id}/tasks", headers=user.headers).json()] == ["Mine"]
    assert_works(api, other.headers)


def test_logout_with_the_refresh_token_of_another_own_session_ends_it_too(api: TestClient, users: UserFactory) -> None:
    user = users.create()
    caller, named, bystander = first_session(user), login(api, user.email), login(api, user.email)

    response = api.post(LOGOUT, headers=caller.headers, json={"refresh_token": named.refresh_token})

    assert response.status_code == 204
    assert_session_dead(api, caller)
    assert_session_dead(api, named)
    assert_session_alive(api, bystander)


def test_logout_with_another_users_refresh_token_leaves_their_session_alone(
    api: TestClient, users: UserFactory
) -> None:
    caller, victim = first_session(users.create()), first_session(users.create())

    response = api.post(LOGOUT, headers=caller.headers, json={"refresh_token": victim.refresh_token})

    assert response.status_code == 204
    assert_session_dead(api, caller)
    assert_session_alive(api, victim)


def test_logout_with_a_better_auth_token_refuses_that_token_only(api: TestClient) -> None:
    sub, email, used = better_auth_user(api)
    other = ba_headers(sub, email=email)
    assert used != other

    response = api.post(LOGOUT, headers=used)

    assert response.status_code == 204
    assert_refused(api, used)
    assert_unauthorized(api.post(LOGOUT, headers=used))
    assert assert_works(api, other)["id"] == sub


def test_logout_without_a_token_is_401(api: TestClient) -> None:
    assert_unauthorized(api.post(LOGOUT), NOT_AUTHENTICATED)


# --------------------------------------------------------------------------------------------- logout-all


def test_logout_all_ends_every_session_and_a_login_right_after_works(api: TestClient, users: UserFactory) -> None:
    user, bystander = users.create(), first_session(users.create())
    caller, second = first_session(user), login(api, user.email)
    rotated_second = refreshed(api, second.refresh_token)

    response = api.post(LOGOUT_ALL, headers=caller.headers)

    assert response.status_code == 204
    assert response.content == b""
    assert_session_dead(api, caller)
    assert_refused(api, second.headers)
    assert_session_dead(api, rotated_second)
    # A login within the same second is after the logout-all, so it works; so does its refresh token.
    fresh = login(api, user.email)
    assert [row["id"] for row in list_sessions(api, fresh.headers)] == [fresh.session_id]
    assert_session_alive(api, fresh)
    assert_session_alive(api, bystander)


def test_logout_all_refuses_better_auth_tokens_issued_before(api: TestClient, db_session: Session) -> None:
    sub, email, caller = better_auth_user(api, iat=seconds_ago(5))
    earlier = ba_headers(sub, email=email, iat=seconds_ago(5))
    other_sub, _, other_user = better_auth_user(api, iat=seconds_ago(5))

    assert api.post(LOGOUT_ALL, headers=caller).status_code == 204

    assert_refused(api, caller)
    assert_refused(api, earlier)
    assert assert_works(api, other_user)["id"] == other_sub
    # A token the frontend mints in a later second than the logout-all works.
    move_back(db_session, user_id=sub, seconds=2)
    assert_refused(api, earlier)
    assert assert_works(api, ba_headers(sub, email=email))["id"] == sub


def test_logout_all_by_a_local_user_also_refuses_their_better_auth_tokens(
    api: TestClient, users: UserFactory, db_session: Session
) -> None:
    """A user known here by password who also signs in through the frontend (same id as `sub`)."""
    user = users.create()
    frontend = ba_headers(user.id, email=user.email, iat=seconds_ago(5))
    assert assert_works(api, frontend)["id"] == user.id

    assert api.post(LOGOUT_ALL, headers=user.headers).status_code == 204

    assert_refused(api, frontend)
    move_back(db_session, user_id=user.id, seconds=2)
    assert assert_works(api, ba_headers(user.id, email=user.email))["id"] == user.id


def test_logout_all_without_a_token_is_401(api: TestClient) -> None:
    assert_unauthorized(api.post(LOGOUT_ALL), NOT_AUTHENTICATED)


# --------------------------------------------------------------------------------------------- listing


def test_sessions_are_listed_without_secrets(api: TestClient, users: UserFactory) -> None:
    user = users.create()
    registered = first_session(user)
    desktop = login(api, user.email, user_agent="Desktop Browser/1.0")
    phone = login(api, user.email, user_agent="Phone App/2.0")

    response = api.get(SESSIONS, headers=phone.headers)

    assert response.status_code == 200, response.text
    rows = response.json()
    assert isinstance(rows, list)
    assert all(set(row) == SESSION_KEYS for row in rows)
    by_id = {row["id"]: row for row in rows}
    assert set(by_id) == {registered.session_id, desktop.session_id, phone.session_id}
    assert [row["id"] for row in rows if row["current"] is True] == [phone.session_id]
    assert all(row["current"] is False for row in rows if row["id"] != phone.session_id)
    assert by_id[desktop.session_id]["user_agent"] == "Desktop Browser/1.0"
    assert by_id[phone.session_id]["user_agent"] == "Phone App/2.0"
    assert by_id[registered.session_id]["user_agent"] == "testclient"
    for row in rows:
        assert row["ip"] == "testclient"  # the socket peer as Starlette's TestClient reports it
        created = assert_utc_timestamp(row["created_at"])
        assert assert_utc_timestamp(row["last_used_at"]) >= created
        assert assert_utc_timestamp(row["expires_at"]) > created
    for session in (registered, desktop, phone):
        assert session.refresh_token not in response.text
        assert hash_token(session.refresh_token) not in response.text
        assert session.access_token not in response.text


def test_revoked_sessions_are_not_listed(api: TestClient, users: UserFactory) -> None:
    user = users.create()
    current, gone = first_session(user), login(api, user.email)
    assert api.post(LOGOUT, headers=gone.headers).status_code == 204

    rows = list_sessions(api, current.headers)

    assert [(row["id"], row["current"]) for row in rows] == [(current.session_id, True)]


def test_a_better_auth_user_has_no_sessions_here(api: TestClient) -> None:
    _, _, headers = better_auth_user(api)
    assert list_sessions(api, headers) == []


def test_sessions_require_a_token(api: TestClient) -> None:
    assert_unauthorized(api.get(SESSIONS), NOT_AUTHENTICATED)
    assert_unauthorized(api.delete(f"{SESSIONS}/anything"), NOT_AUTHENTICATED)


# --------------------------------------------------------------------------------------------- revoking one


def test_deleting_a_session_kills_its_tokens(api: TestClient, users: UserFactory) -> None:
    user = users.create()
    caller, target = first_session(user), login(api, user.email)
    target_rotated = refreshed(api, target.refresh_token)

    response = api.delete(f"{SESSIONS}/{target.session_id}", headers=caller.headers)

    assert response.status_code == 204
    assert response.content == b""
    assert_refused(api, target.headers)
    assert_session_dead(api, target_rotated)
    assert [row["id"] for row in list_sessions(api, caller.headers)] == [caller.session_id]
    assert_session_alive(api, caller)
    # Gone is gone: deleting it again is a 404.
    again = api.delete(f"{SESSIONS}/{target.session_id}", headers=caller.headers)
    assert again.status_code == 404
    assert again.json() == SESSION_NOT_FOUND


def test_deleting_the_current_session_logs_the_caller_out(api: TestClient, users: UserFactory) -> None:
    session = first_session(users.create())
    assert api.delete(f"{SESSIONS}/{session.session_id}", headers=session.headers).status_code == 204
    assert_session_dead(api, session)


def test_another_users_session_is_indistinguishable_from_a_missing_one(api: TestClient, users: UserFactory) -> None:
    caller, victim = first_session(users.create()), first_session(users.create())

    foreign = api.delete(f"{SESSIONS}/{victim.session_id}", headers=caller.headers)
    missing = api.delete(f"{SESSIONS}/00000000-0000-0000-0000-000000000000", headers=caller.headers)

    assert foreign.status_code == missing.status_code == 404
    assert foreign.json() == SESSION_NOT_FOUND
    assert foreign.content == missing.content
    assert_session_alive(api, victim)
    assert_session_alive(api, caller)
