"""Helpers that create users and tokens as real clients do: through the API, or signed like a frontend."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import jwt
from fastapi.testclient import TestClient

TEST_SECRET = "test-secret-that-is-at-least-32-characters-long"
PASSWORD = "correct horse battery staple"


def unique_email(prefix: str = "user") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}@example.com"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def better_auth_token(
    sub: str | None = None,
    *,
    secret: str = TEST_SECRET,
    algorithm: str = "HS256",
    expires_in: int = 900,
    **claims: Any,
) -> str:
    """An HS256 token as a Better Auth frontend signs it with the shared secret (no `iss` of ours)."""
    now = int(time.time())
    payload: dict[str, Any] = {"sub": sub or f"ba_{uuid.uuid4().hex}", "iat": now, "exp": now + expires_in}
    payload.update(claims)
    return jwt.encode({k: v for k, v in payload.items() if v is not None}, secret, algorithm=algorithm)


@dataclass
class RegisteredUser:
    id: str
    email: str
    password: str
    token: str
    body: dict[str, Any] = field(repr=False)

    @property
    def headers(self) -> dict[str, str]:
        return bearer(self.token)


class UserFactory:
    def __init__(self, client: TestClient) -> None:
        self.client = client

    def create(self, *, email: str | None = None, password: str = PASSWORD, name: str = "Test User") -> RegisteredUser:
        email = email or unique_email()
        response = self.client.post("/api/auth/register", json={"name": name, "email": email, "password": password})
        assert response.status_code == 201, response.text
        body = response.json()
        return RegisteredUser(
            id=body["user"]["id"],
            email=body["user"]["email"],
            password=password,
            token=body["access_token"],
            body=body,
        )
