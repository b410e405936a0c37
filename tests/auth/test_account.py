"""Account management: profile changes, password change, and deleting the account with everything in it."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, col, select

from tests.auth.helpers import (
    AUTH_KEYS,
    CHANGE_PASSWORD,
    EXPIRES_IN,
    INVALID_LOGIN,
    LOGIN,
    ME,
    NEW_PASSWORD,
    NOT_AUTHENTICATED,
    OTHER_PASSWORD,
    Login,
    assert_refused,
    assert_session_alive,
    assert_session_dead,
    assert_unauthorized,
    assert_validation_error,
    assert_works,
    ba_headers,
    better_auth_user,
    claims_of,
    first_session,
    login,
    move_deletion_back,
    seconds_ago,
)
from tests.factories import PASSWORD, RegisteredUser, UserFactory, unique_email
from tests.tasks.helpers import Actor, create_task, list_tasks
from todo_api.auth.models import AuthSession, DeletedUser, User
from todo_api.tasks.models import Task

EMAIL_TAKEN = {"detail": "Email already registered"}
WRONG_CURRENT_PASSWORD = {"detail": "Current password is incorrect"}
NO_PASSWORD = {"detail": "This account has no password here; it signs in through Better Auth"}
CONFIRM_WITH_PASSWORD = {"detail": "Confirm the deletion with your current password"}


def patch_me(client: TestClient, headers: dict[str, str], payload: dict[str, Any]) -> httpx.Response:
    return client.patch(ME, headers=headers, json=payload)


def public_user(user: RegisteredUser, **changes: Any) -> dict[str, Any]:
    expected: dict[str, Any] = {**user.body["user"], **changes}
    return expected


def change_password(
    client: TestClient, headers: dict[str, str], current: str, new: str = NEW_PASSWORD
) -> httpx.Response:
    return client.post(CHANGE_PASSWORD, headers=headers, json={"current_password": current, "new_password": new})


def delete_me(client: TestClient, headers: dict[str, str], payload: dict[str, Any] | None = None) -> httpx.Response:
    return client.request("DELETE", ME, headers=headers, json=payload)


def password_login(client: TestClient, email: str, password: str) -> httpx.Response:
    return client.post(LOGIN, json={"email": email, "password": password})


# --------------------------------------------------------------------------------------------- PATCH /me


def test_patch_me_changes_the_name(api: TestClient, users: UserFactory) -> None:
    user = users.create(name="Old Name")

    response = patch_me(api, user.headers, {"name": "  New Name  "})

    assert response.status_code == 200, response.text
    assert response.json() == public_user(user, name="New Name")
    assert assert_works(api, user.headers) == public_user(user, name="New Name")


def test_patch_me_normalizes_the_email(api: TestClient, users: UserFactory) -> None:
    user = users.create()
    new_email = unique_email("moved")

    response = patch_me(api, user.headers, {"email": f"  {new_email.upper()} "})

    assert response.status_code == 200, response.text
    assert response.json() == public_user(user, email=new_email)
    assert login(api, new_email.upper()).body["user"]["email"] == new_email
    assert_unauthorized(password_login(api, user.email, PASSWORD), INVALID_LOGIN)


def test_patch_me_with_own_email_in_another_case_is_not_a_conflict(api: TestClient, users: UserFactory) -> None:
    user = users.create()

    response = patch_me(api, user.headers, {"email": user.email.upper(), "name": "Same Me"})

    assert response.status_code == 200, response.text
    assert response.json() == public_user(user, name="Same Me")


def test_patch_me_with_another_users_email_is_409(api: TestClient, users: UserFactory) -> None:
    owner, user = users.create(), users.create(name="Unchanged")

    response = patch_me(api, user.headers, {"email": f" {owner.email.upper()}", "name": "Thief"})

    assert response.status_code == 409
    assert response.json() == EMAIL_TAKEN
    assert assert_works(api, user.headers) == public_user(user)
    assert assert_works(api, owner.headers) == public_user(owner)


@pytest.mark.parametrize(
    "payload",
    [
        {"name": ""},
        {"name": "   "},
        {"name": None},
        {"name": "x" * 101},
        {"email": "not-an-email"},
        {"email": ""},
        {"email": None},
    ],
    ids=["empty-name", "blank-name", "null-name", "long-name", "bad-email", "empty-email", "null-email"],
)
def test_patch_me_validation(api: TestClient, users: UserFactory, payload: dict[str, Any]) -> None:
    user = users.create(name="Unchanged")

    errors = assert_validation_error(patch_me(api, user.headers, payload))

    assert [error["loc"] for error in errors] == [["body", next(iter(payload))]]
    assert assert_works(api, user.headers) == public_user(user)


@pytest.mark.parametrize(
    ("method", "path"),
    [("PATCH", ME), ("DELETE", ME), ("POST", CHANGE_PASSWORD)],
)
def test_account_routes_require_a_token(api: TestClient, method: str, path: str) -> None:
    assert_unauthorized(api.request(method, path, json={}), NOT_AUTHENTICATED)


# --------------------------------------------------------------------------------------------- change-password


def test_wrong_current_password_is_400_and_keeps_the_caller_logged_in(api: TestClient, users: UserFactory) -> None:
    user = users.create()
    session = first_session(user)

    response = change_password(api, session.headers, current="not my password at all")

    assert response.status_code == 400
    assert response.json() == WRONG_CURRENT_PASSWORD
    assert_session_alive(api, session)
    login(api, user.email, PASSWORD)
    assert_unauthorized(password_login(api, user.email, NEW_PASSWORD), INVALID_LOGIN)


def test_change_password_issues_fresh_tokens_and_ends_every_other_session(api: TestClient, users: UserFactory) -> None:
    user = users.create()
    caller, other = first_session(user), login(api, user.email)
    rotated_other = assert_session_alive(api, other)

    response = change_password(api, caller.headers, current=PASSWORD)

    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == AUTH_KEYS
    assert body["message"] == "Password changed"
    assert body["user"] == public_user(user)
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == EXPIRES_IN
    fresh = Login(access_token=body["access_token"], refresh_token=body["refresh_token"], body=body)
    assert claims_of(fresh.access_token)["sub"] == user.id
    assert fresh.session_id not in {caller.session_id, other.session_id}
    assert_session_dead(api, caller)
    assert_refused(api, other.headers)
    assert_session_dead(api, rotated_other)
    assert_session_alive(api, fresh)
    login(api, user.email, NEW_PASSWORD)
    assert_unauthorized(password_login(api, user.email, PASSWORD), INVALID_LOGIN)


def test_change_password_refuses_better_auth_tokens_issued_before(api: TestClient, users: UserFactory) -> None:
    user = users.create()
    frontend = ba_headers(user.id, email=user.email, iat=seconds_ago(5))
    assert_works(api, frontend)

    assert change_password(api, user.headers, current=PASSWORD).status_code == 200

    assert_refused(api, frontend)


WEAK_SECRET = "Sh0rt!x"


@pytest.mark.parametrize(
    "new_password",
    ["password", "iloveyou", "Password1", WEAK_SECRET, "p" * 7 + "\x00", "long-" + "x" * 124],
    ids=["common", "common-2", "common-any-case", "short", "nul", "too-long"],
)
def test_change_password_applies_the_password_rules(api: TestClient, users: UserFactory, new_password: str) -> None:
    user = users.create()

    response = change_password(api, user.headers, current=PASSWORD, new=new_password)

    errors = assert_validation_error(response, WEAK_SECRET, "x" * 124)
    assert [error["loc"] for error in errors] == [["body", "new_password"]]
    assert all("input" not in error for error in errors)
    assert_works(api, user.headers)
    login(api, user.email, PASSWORD)


def test_change_password_of_a_better_auth_user_is_400(api: TestClient) -> None:
    _, _, headers = better_auth_user(api)

    response = change_password(api, headers, current="whatever they type", new=OTHER_PASSWORD)

    assert response.status_code == 400
    assert response.json() == NO_PASSWORD
    assert_works(api, headers)


# --------------------------------------------------------------------------------------------- DELETE /me


@pytest.mark.parametrize(
    "payload",
    [None, {}, {"password": None}, {"password": ""}, {"password": "not the password"}],
    ids=["no-body", "empty-body", "null", "empty", "wrong"],
)
def test_deleting_a_local_account_needs_the_right_password(
    api: TestClient, users: UserFactory, payload: dict[str, Any] | None
) -> None:
    user = users.create()

    response = delete_me(api, user.headers, payload)

    assert response.status_code == 400
    assert response.json() == CONFIRM_WITH_PASSWORD
    assert_session_alive(api, first_session(user))
    login(api, user.email)


def test_deleting_a_local_account_removes_the_user_tasks_and_sessions(
    api: TestClient, users: UserFactory, db_session: Session
) -> None:
    user, neighbour = users.create(), users.create()
    sessions = [first_session(user), login(api, user.email)]
    for title in ("first", "second"):
        create_task(api, Actor(id=user.id, headers=user.headers), title=title)
    neighbour_actor = Actor(id=neighbour.id, headers=neighbour.headers)
    create_task(api, neighbour_actor, title="kept")

    response = delete_me(api, user.headers, {"password": PASSWORD})

    assert response.status_code == 204
    assert response.content == b""
    for session in sessions:
        assert_session_dead(api, session)
    assert_unauthorized(password_login(api, user.email, PASSWORD), INVALID_LOGIN)
    db_session.expire_all()
    assert db_session.get(User, user.id) is None
    assert db_session.exec(select(Task).where(col(Task.user_id) == user.id)).all() == []
    assert db_session.exec(select(AuthSession).where(col(AuthSession.user_id) == user.id)).all() == []
    assert [task["title"] for task in list_tasks(api, neighbour_actor)] == ["kept"]
    # The address is free again: someone may register with it.
    assert users.create(email=user.email).id != user.id


def test_deleting_a_better_auth_account_needs_no_password_and_is_not_recreated_by_old_tokens(
    api: TestClient, db_session: Session
) -> None:
    sub, email, headers = better_auth_user(api, iat=seconds_ago(5))
    create_task(api, Actor(id=sub, headers=headers), title="will be deleted")
    issued_before = ba_headers(sub, email=email, iat=seconds_ago(3))

    response = delete_me(api, headers)

    assert response.status_code == 204
    assert_refused(api, headers)
    assert_refused(api, issued_before)
    db_session.expire_all()
    assert db_session.get(User, sub) is None
    assert db_session.exec(select(Task).where(col(Task.user_id) == sub)).all() == []
    assert db_session.get(DeletedUser, sub) is not None


def test_a_better_auth_token_issued_after_the_deletion_creates_a_fresh_account(
    api: TestClient, db_session: Session
) -> None:
    sub, email, headers = better_auth_user(api, iat=seconds_ago(5))
    create_task(api, Actor(id=sub, headers=headers), title="from the old account")
    assert delete_me(api, headers).status_code == 204

    # PyJWT refuses an `iat` in the future, so the deletion is moved into the past instead.
    move_deletion_back(db_session, user_id=sub, seconds=3)
    fresh = ba_headers(sub, email=email)

    assert_refused(api, headers)
    body = assert_works(api, fresh)
    assert body["id"] == sub
    assert body["email"] == email
    assert list_tasks(api, Actor(id=sub, headers=fresh)) == []
