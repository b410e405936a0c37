"""Shared-secret JWTs: the signature check is cached per token, the times are checked on every use."""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest
from fastapi.testclient import TestClient

from tests.conftest import make_settings, use_session
from tests.factories import TEST_SECRET, UserFactory, bearer
from todo_api.main import create_app
from todo_api.security import InvalidToken, check_times, decode_token

OTHER_SECRET = "a-second-secret-that-is-also-long-enough-0123"


def _token(secret: str = TEST_SECRET, **claims: Any) -> str:
    now = int(time.time())
    payload: dict[str, Any] = {"sub": "user-1", "iat": now, "exp": now + 600}
    payload.update(claims)
    return jwt.encode({k: v for k, v in payload.items() if v is not None}, secret, algorithm="HS256")


NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("claims", "leeway"),
    [
        ({"exp": NOW + 60}, 0),
        ({"exp": NOW - 10}, 30),  # expired, within the leeway
        ({"exp": NOW + 60, "nbf": NOW + 10, "iat": NOW + 10}, 30),  # slightly ahead clocks, within the leeway
        ({"exp": int(NOW) + 60, "nbf": int(NOW), "iat": int(NOW)}, 0),
    ],
)
def test_times_within_bounds_pass(monkeypatch: pytest.MonkeyPatch, claims: dict[str, Any], leeway: int) -> None:
    monkeypatch.setattr(time, "time", lambda: NOW)
    check_times(claims, leeway=leeway)


@pytest.mark.parametrize(
    ("claims", "leeway"),
    [
        ({"exp": NOW}, 0),
        ({"exp": NOW - 31}, 30),
        ({"exp": NOW + 60, "nbf": NOW + 31}, 30),
        ({"exp": NOW + 60, "iat": NOW + 31}, 30),
        ({}, 30),
        ({"exp": None}, 30),
        ({"exp": True}, 30),
        ({"exp": "tomorrow"}, 30),
        ({"exp": NOW + 60, "nbf": "now"}, 30),
        ({"exp": NOW + 60, "iat": [1]}, 30),
    ],
)
def test_times_out_of_bounds_or_malformed_are_refused(
    monkeypatch: pytest.MonkeyPatch, claims: dict[str, Any], leeway: int
) -> None:
    monkeypatch.setattr(time, "time", lambda: NOW)
    with pytest.raises(InvalidToken):
        check_times(claims, leeway=leeway)


def test_a_cached_token_is_refused_once_it_expires() -> None:
    settings = make_settings("sqlite://", JWT_LEEWAY=0)
    token = _token(exp=int(time.time()) + 2)
    assert decode_token(token, settings=settings)["sub"] == "user-1"
    assert decode_token(token, settings=settings)["sub"] == "user-1"  # from the cache
    time.sleep(max(0.0, jwt.decode(token, options={"verify_signature": False})["exp"] - time.time()) + 0.1)
    with pytest.raises(InvalidToken, match="ExpiredSignatureError"):
        decode_token(token, settings=settings)


def test_a_token_accepted_under_one_secret_is_refused_under_another() -> None:
    token = _token()
    assert decode_token(token, settings=make_settings("sqlite://"))["sub"] == "user-1"
    with pytest.raises(InvalidToken):
        decode_token(token, settings=make_settings("sqlite://", BETTER_AUTH_SECRET=OTHER_SECRET))


def test_the_returned_claims_are_a_copy() -> None:
    settings = make_settings("sqlite://")
    token = _token()
    decode_token(token, settings=settings)["sub"] = "someone-else"
    assert decode_token(token, settings=settings)["sub"] == "user-1"


def test_a_secret_rotation_refuses_tokens_already_checked(
    client: TestClient, users: UserFactory, database_url: str, db_session: Any
) -> None:
    user = users.create()
    assert client.get("/api/auth/me", headers=user.headers).status_code == 200
    rotated = create_app(make_settings(database_url, BETTER_AUTH_SECRET=OTHER_SECRET))
    use_session(rotated, db_session)
    with TestClient(rotated) as other:
        response = other.get("/api/auth/me", headers=bearer(user.token))
    assert response.status_code == 401
    assert response.json() == {"detail": "Could not validate credentials"}
