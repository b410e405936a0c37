"""A stand-in Better Auth frontend for the tests: key pairs, a real JWKS server on 127.0.0.1, tokens minted
the way its jwt plugin mints them, session tokens signed the way its cookies are, and apps built with
settings that point at it."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from fastapi.testclient import TestClient
from jwt.algorithms import get_default_algorithms
from sqlalchemy import Connection, Engine, text
from sqlmodel import Session

from tests.conftest import make_settings, use_session
from tests.factories import TEST_SECRET, bearer, unique_email
from todo_api.auth.better_auth import JWKSCache
from todo_api.main import create_app

JWKS_PATH = "/api/auth/jwks"
ALGORITHMS = ("EdDSA", "ES256", "ES512", "PS256", "RS256")
SESSION_TOKEN_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
DROP: Any = object()  # as a claim value: leave that claim out


@dataclass(frozen=True)
class SigningKey:
    """One of the frontend's key pairs; `jwk` is the public key exactly as its JWKS endpoint lists it."""

    kid: str
    alg: str
    private_key: Any = field(repr=False)

    @property
    def jwk(self) -> dict[str, Any]:
        public = get_default_algorithms()[self.alg].to_jwk(self.private_key.public_key(), as_dict=True)
        return {"alg": self.alg, **public, "kid": self.kid}


def new_key(alg: str, *, kid: str | None = None) -> SigningKey:
    private_key: Any
    if alg == "EdDSA":
        private_key = ed25519.Ed25519PrivateKey.generate()
    elif alg == "ES256":
        private_key = ec.generate_private_key(ec.SECP256R1())
    elif alg == "ES512":
        private_key = ec.generate_private_key(ec.SECP521R1())
    elif alg in {"PS256", "RS256"}:
        private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    else:
        raise ValueError(alg)
    return SigningKey(kid=kid or secrets.token_urlsafe(24), alg=alg, private_key=private_key)


def sign(payload: dict[str, Any], key: SigningKey, **header: Any) -> str:
    """Header `{alg, kid}` and no `typ`, like jose's SignJWT in the plugin; `header` adds to it."""
    headers: dict[str, Any] = {"kid": key.kid, "typ": None}
    headers.update(header)
    return jwt.encode(payload, key.private_key, algorithm=key.alg, headers=headers)


@dataclass
class FrontendUser:
    id: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    name: str = "Grace Hopper"
    email: str = field(default_factory=lambda: unique_email("ba"))


def plugin_payload(
    user: FrontendUser, *, iss: str, aud: str | list[str], expires_in: int = 900, **overrides: Any
) -> dict[str, Any]:
    """What `GET /api/auth/token` signs: the user object plus sub, iat, exp, iss and aud."""
    now = int(time.time())
    stamp = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    payload: dict[str, Any] = {
        "iat": now,
        "id": user.id,
        "name": user.name,
        "email": user.email,
        "emailVerified": False,
        "image": None,
        "createdAt": stamp,
        "updatedAt": stamp,
        "sub": user.id,
        "exp": now + expires_in,
        "iss": iss,
        "aud": aud,
    }
    payload.update(overrides)
    return {name: value for name, value in payload.items() if value is not DROP}


class JWKSServer:
    """A real HTTP server on 127.0.0.1 serving `{"keys": [...]}` at /api/auth/jwks; counts the fetches.

    `keys` may be replaced at any time (rotation); `raw_keys` are listed as given; `status` other than 200
    answers an error (with `body`, if set, instead of the key set); `delay` makes
    every answer that slow; `stop()` closes the socket, so later fetches are refused.
    """

    def __init__(self, keys: list[SigningKey] | None = None) -> None:
        self.keys: list[SigningKey] = list(keys or [])
        self.raw_keys: list[Any] = []  # served as they are, before `keys`
        self.status = 200
        self.body: bytes | None = None  # served instead of the key set when set
        self.delay = 0.0
        self.fetches = 0
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server API
                with server._lock:
                    server.fetches += 1
                if server.delay:
                    time.sleep(server.delay)
                if self.path != JWKS_PATH:
                    body, status = b'{"message": "not found"}', 404
                else:
                    body = (
                        server.body or json.dumps({"keys": server.raw_keys + [key.jwk for key in server.keys]}).encode()
                    )
                    status = server.status
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass  # the client gave up (timed out) first

            def log_message(self, *_: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        self._running = True

    @property
    def jwks_url(self) -> str:
        return self.url + JWKS_PATH

    def stop(self) -> None:
        if self._running:
            self._running = False
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join(timeout=10)


class AppFactory:
    """Builds apps with their own settings, each answering through the test's rolled-back session."""

    def __init__(self, database_url: str, db_session: Session) -> None:
        self.database_url = database_url
        self.db_session = db_session
        self._stack = ExitStack()

    def __enter__(self) -> AppFactory:
        return self

    def __exit__(self, *_: object) -> None:
        self._stack.close()

    def client(self, *, jwks_options: dict[str, float] | None = None, **settings: Any) -> TestClient:
        """An app built from `settings`; `jwks_options` rebuild its JWKS cache with other constructor
        arguments (`ttl`, `timeout`, `min_refetch_interval`, which is 10 s in the service)."""
        app = create_app(make_settings(self.database_url, **settings))
        if jwks_options is not None:
            jwks = app.state.better_auth.jwks
            options: dict[str, Any] = {"ttl": jwks.ttl, "algorithms": jwks.algorithms, **jwks_options}
            app.state.better_auth.jwks = JWKSCache(jwks.url, **options)
        use_session(app, self.db_session)
        return self._stack.enter_context(TestClient(app, base_url="http://testserver"))


def me(client: TestClient, token: str) -> Any:
    return client.get("/api/auth/me", headers=bearer(token))


def new_session_token() -> str:
    return "".join(secrets.choice(SESSION_TOKEN_ALPHABET) for _ in range(32))


def signed_session_token(token: str, secret: str = TEST_SECRET) -> str:
    """The `set-auth-token` / cookie value: `token.base64(HMAC-SHA256(secret, token))`."""
    signature = hmac.new(secret.encode(), token.encode(), hashlib.sha256).digest()
    return f"{token}.{base64.b64encode(signature).decode()}"


def random_id() -> str:
    return uuid.uuid4().hex


# Better Auth's `user` and `session` tables as its Kysely migrations create them (camelCase, quoted), on
# PostgreSQL (timestamptz) and SQLite (dates stored as ISO-8601 text). Never part of our migrations.
_TIMESTAMP = {"postgresql": "timestamptz", "sqlite": "date"}
_BOOLEAN = {"postgresql": "boolean", "sqlite": "integer"}


def better_auth_schema(dialect: str) -> list[str]:
    ts, boolean = _TIMESTAMP[dialect], _BOOLEAN[dialect]
    return [
        f'CREATE TABLE "user" ("id" text NOT NULL PRIMARY KEY, "name" text NOT NULL, '
        f'"email" text NOT NULL UNIQUE, "emailVerified" {boolean} NOT NULL, "image" text, '
        f'"createdAt" {ts} NOT NULL, "updatedAt" {ts} NOT NULL)',
        f'CREATE TABLE "session" ("id" text NOT NULL PRIMARY KEY, "expiresAt" {ts} NOT NULL, '
        f'"token" text NOT NULL UNIQUE, "createdAt" {ts} NOT NULL, "updatedAt" {ts} NOT NULL, '
        f'"ipAddress" text, "userAgent" text, '
        f'"userId" text NOT NULL REFERENCES "user" ("id") ON DELETE CASCADE)',
    ]


class BetterAuthTables:
    """Rows in Better Auth's tables, written the way its adapter writes them: committed through an `Engine`
    (a scratch database standing for Better Auth's), or inside the caller's transaction on a `Connection`."""

    def __init__(self, bind: Engine | Connection) -> None:
        self.bind = bind
        self.dialect = bind.dialect.name

    def _execute(self, statement: str, params: dict[str, Any] | None = None) -> None:
        if isinstance(self.bind, Engine):
            with self.bind.begin() as connection:
                connection.execute(text(statement), params or {})
        else:
            self.bind.execute(text(statement), params or {})

    def create(self) -> BetterAuthTables:
        for statement in better_auth_schema(self.dialect):
            self._execute(statement)
        return self

    def stamp(self, value: datetime | Any) -> Any:
        if isinstance(value, datetime) and self.dialect == "sqlite":
            return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        return value

    def add_user(self, *, name: str = "Grace Hopper", email: str | None = None) -> FrontendUser:
        user = FrontendUser(name=name, email=email or unique_email("ba"))
        now = self.stamp(datetime.now(UTC))
        self._execute(
            'INSERT INTO "user" ("id", "name", "email", "emailVerified", "image", "createdAt", "updatedAt") '
            "VALUES (:id, :name, :email, :verified, NULL, :now, :now)",
            {"id": user.id, "name": user.name, "email": user.email, "verified": False, "now": now},
        )
        return user

    def update_user(self, user: FrontendUser) -> None:
        self._execute(
            'UPDATE "user" SET "name" = :name, "email" = :email WHERE "id" = :id',
            {"id": user.id, "name": user.name, "email": user.email},
        )

    def add_session(self, user: FrontendUser, *, expires_in: float = 7 * 24 * 3600, expires_at: Any = None) -> str:
        """A new session for `user`; returns its raw token."""
        token = new_session_token()
        now = datetime.now(UTC)
        expires = expires_at if expires_at is not None else now + timedelta(seconds=expires_in)
        self._execute(
            'INSERT INTO "session" ("id", "expiresAt", "token", "createdAt", "updatedAt", "userId") '
            "VALUES (:id, :expires, :token, :now, :now, :user_id)",
            {
                "id": random_id(),
                "expires": self.stamp(expires),
                "token": token,
                "now": self.stamp(now),
                "user_id": user.id,
            },
        )
        return token

    def delete_session(self, token: str) -> None:
        self._execute('DELETE FROM "session" WHERE "token" = :token', {"token": token})
