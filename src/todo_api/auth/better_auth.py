"""A Better Auth frontend's own credentials: JWTs signed with its JWKS keys, and its session tokens."""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import json
import logging
import re
import threading
import time
from collections.abc import Collection
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import unquote

import httpx
import jwt
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import OperationalError, ProgrammingError

from todo_api.config import Settings
from todo_api.db import build_engine
from todo_api.security import ALGORITHM as SHARED_SECRET_ALGORITHM
from todo_api.security import InvalidToken, check_subject, timestamp

logger = logging.getLogger(__name__)

FETCH_TIMEOUT_SECONDS = 3.0
# However many requests carry unknown kids, the JWKS is fetched at most once per this interval (per process).
MIN_REFETCH_INTERVAL_SECONDS = 10.0
MAX_JWKS_BYTES = 256 * 1024
MAX_KID_LENGTH = 256
# JWK members that only a private key has; a JWKS should never carry them, and we never use them.
PRIVATE_JWK_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})

# Better Auth's session tokens: 32 characters, and the signed form `token.base64(HMAC-SHA256(secret, token))`.
RAW_SESSION_TOKEN = re.compile(r"[A-Za-z0-9]{32}")
SESSION_SIGNATURE_LENGTH = 44
MAX_SESSION_TOKEN_LENGTH = 255
# Better Auth's own tables (camelCase, quoted). Raw SQL on purpose: they are not ours, so they must never
# appear in SQLModel.metadata, where Alembic would try to manage them.
SESSION_QUERY = text(
    'SELECT s."userId", s."expiresAt", s."createdAt", u."email", u."name" '
    'FROM "session" AS s JOIN "user" AS u ON u."id" = s."userId" '
    'WHERE s."token" = :token'
)


class TokenKind(enum.Enum):
    SESSION = "session"  # not a JWT: a Better Auth session token
    SHARED_SECRET = "shared-secret"  # a JWT naming HS256: ours, or a frontend's signed with the secret
    JWKS = "jwks"  # a JWT naming any other algorithm: only ever checked against the frontend's JWKS


def token_kind(token: str) -> TokenKind:
    """Which check a token goes to, from the `alg` its header names. Only a routing decision, so the header is
    read with the standard library (PyJWT's strict parsing costs more than a small query); the check it goes to
    parses and verifies the whole token strictly."""
    if token.count(".") != 2:
        return TokenKind.SESSION
    segment = token.partition(".")[0]
    try:
        header = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except ValueError:  # bad base64 (binascii.Error), bad UTF-8 or bad JSON
        return TokenKind.SHARED_SECRET  # malformed: refused by the shared-secret path like any bad token
    algorithm = header.get("alg") if isinstance(header, dict) else None
    return TokenKind.SHARED_SECRET if algorithm == SHARED_SECRET_ALGORITHM else TokenKind.JWKS


class JWKSCache:
    """The frontend's public keys by `kid`, fetched from its JWKS endpoint.

    Keys are refreshed after `ttl` seconds and an unknown `kid` triggers a refetch, but there is never more
    than one fetch per `min_refetch_interval`, whatever the reason: a flood of made-up kids cannot become a
    flood of fetches. While the endpoint fails, the last keys fetched keep working. Callers run in FastAPI's
    thread pool, so a fetch blocks only the requests that need it.
    """

    def __init__(
        self,
        url: str,
        *,
        ttl: float,
        algorithms: Collection[str],
        min_refetch_interval: float = MIN_REFETCH_INTERVAL_SECONDS,
        timeout: float = FETCH_TIMEOUT_SECONDS,
    ) -> None:
        self.url = url
        self.ttl = ttl
        self.algorithms = frozenset(algorithms)
        self.min_refetch_interval = min_refetch_interval
        self.timeout = timeout
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at: float | None = None  # last successful fetch
        self._attempted_at: float | None = None  # last fetch, successful or not
        self._lock = threading.Lock()

    def get(self, kid: str) -> jwt.PyJWK | None:
        key = self._keys.get(kid)
        if key is not None:
            if self._is_stale() and self._lock.acquire(blocking=False):
                # One request refreshes; the others keep using the current keys meanwhile.
                try:
                    if self._is_stale():
                        self._refetch_if_allowed()
                finally:
                    self._lock.release()
            return self._keys.get(kid)
        # Unknown kid: wait for the fetch in flight, or make the one allowed now.
        if not self._lock.acquire(timeout=self.timeout + 1):
            return None
        try:
            if kid not in self._keys:
                self._refetch_if_allowed()
        finally:
            self._lock.release()
        return self._keys.get(kid)

    def _is_stale(self) -> bool:
        return self._fetched_at is None or time.monotonic() - self._fetched_at >= self.ttl

    def _refetch_if_allowed(self) -> None:
        now = time.monotonic()
        if self._attempted_at is not None and now - self._attempted_at < self.min_refetch_interval:
            return
        self._attempted_at = now
        keys = self._fetch()
        if keys is not None:
            self._keys = keys
            self._fetched_at = time.monotonic()

    def _fetch(self) -> dict[str, jwt.PyJWK] | None:
        """The endpoint's usable keys, or None when it did not answer with a JWKS (keep the old keys)."""
        deadline = time.monotonic() + self.timeout
        try:
            with (
                httpx.Client(timeout=self.timeout, follow_redirects=False) as client,
                client.stream("GET", self.url, headers={"Accept": "application/json"}) as response,
            ):
                response.raise_for_status()
                body = bytearray()
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) > MAX_JWKS_BYTES or time.monotonic() > deadline:
                        raise ValueError("JWKS response too large or too slow")
            keys = json.loads(body)["keys"]
            if not isinstance(keys, list):
                raise ValueError("`keys` is not a list")
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            logger.warning("JWKS fetch from %s failed (%s); keeping the previous keys", self.url, exc)
            return None
        return {kid: key for kid, key in map(self._load_key, keys) if key is not None}

    def _load_key(self, jwk: object) -> tuple[str, jwt.PyJWK | None]:
        if not isinstance(jwk, dict) or not isinstance(jwk.get("kid"), str):
            return "", None
        kid, algorithm = jwk["kid"], jwk.get("alg")
        if algorithm not in self.algorithms:
            return kid, None  # no `alg`, or one we do not accept: such a key never verifies anything
        public = {name: value for name, value in jwk.items() if name not in PRIVATE_JWK_MEMBERS}
        try:
            return kid, jwt.PyJWK(public, algorithm=str(algorithm))
        except (jwt.PyJWTError, ValueError, TypeError, KeyError) as exc:
            logger.warning("JWKS key %r skipped: %s", kid, exc)
            return kid, None


class BetterAuth:
    """Per-app verifier of a Better Auth frontend's tokens: its JWKS cache and, if separate, its database."""

    def __init__(self, settings: Settings, *, jwks: JWKSCache | None = None, engine: Engine | None = None):
        self.settings = settings
        self.jwks = jwks
        self.engine = engine

    @classmethod
    def from_settings(cls, settings: Settings) -> BetterAuth:
        """No I/O here: keys are fetched on first use, connections opened on first lookup."""
        jwks = None
        if settings.BETTER_AUTH_JWKS_URL:
            jwks = JWKSCache(
                settings.BETTER_AUTH_JWKS_URL,
                ttl=settings.BETTER_AUTH_JWKS_CACHE_SECONDS,
                algorithms=settings.BETTER_AUTH_ALGORITHMS,
            )
        engine = None
        if settings.BETTER_AUTH_SESSION_LOOKUP and settings.BETTER_AUTH_DATABASE_URL:
            engine = build_engine(settings, settings.BETTER_AUTH_DATABASE_URL)
        return cls(settings, jwks=jwks, engine=engine)

    def close(self) -> None:
        if self.engine is not None:
            self.engine.dispose()

    def decode_jwt(self, token: str) -> dict[str, Any]:
        """Verify a jwt-plugin token: key chosen by `kid`, its `alg` pinned, `iss`, `aud` and `exp` checked.

        `jku`, `x5u` and `jwk` headers are never looked at: the only keys are those of our JWKS URL.
        """
        settings = self.settings
        if self.jwks is None:
            raise InvalidToken("asymmetric token, but no JWKS is configured")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise InvalidToken(type(exc).__name__) from exc
        algorithm, kid = header.get("alg"), header.get("kid")
        if algorithm not in settings.BETTER_AUTH_ALGORITHMS:
            raise InvalidToken("algorithm not allowed")
        if not isinstance(kid, str) or not kid or len(kid) > MAX_KID_LENGTH:
            raise InvalidToken("no usable kid")
        key = self.jwks.get(kid)
        if key is None:
            raise InvalidToken("unknown kid")
        if key.algorithm_name != algorithm:
            raise InvalidToken("algorithm does not match the key's")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                issuer=settings.BETTER_AUTH_ISSUER,
                audience=settings.BETTER_AUTH_AUDIENCE,
                leeway=settings.JWT_LEEWAY,
                # RSA keys under 2048 bits are refused, not merely warned about.
                options={"require": ["exp", "sub", "iss", "aud"], "enforce_minimum_key_length": True},
            )
        except jwt.PyJWTError as exc:
            raise InvalidToken(type(exc).__name__) from exc
        check_subject(claims)
        return claims

    def session_claims(self, connection: Connection, token: str) -> dict[str, Any]:
        """Look a session token up in Better Auth's tables, on every request (a sign-out counts at once).

        Returns `sub`, `email` and `name` of the session's user, and the session's creation (`iat`) and expiry (`exp`).
        """
        settings = self.settings
        if not settings.BETTER_AUTH_SESSION_LOOKUP:
            raise InvalidToken("not a JWT, and session lookup is off")
        session_token = parse_session_token(
            token,
            secret=settings.BETTER_AUTH_SECRET,
            require_signed=settings.BETTER_AUTH_REQUIRE_SIGNED_SESSION,
        )
        try:
            if self.engine is None:  # Better Auth's tables live in our database
                row = _find_session(connection, session_token)
            else:
                with self.engine.connect() as connection:
                    row = _find_session(connection, session_token)
        except (ProgrammingError, OperationalError) as exc:
            if isinstance(exc, OperationalError) and "no such table" not in str(exc):
                raise  # the database is down: a 503, not the client's fault
            # In our own database the failed statement spoiled the block's transaction: the 401 rolls it back.
            logger.error("Better Auth's session/user tables are missing: check BETTER_AUTH_DATABASE_URL")
            raise InvalidToken("no Better Auth tables") from None
        if row is None:
            raise InvalidToken("unknown session")
        user_id, expires_at, created_at, email, name = row
        expires = timestamp(expires_at)
        if expires is None or expires <= datetime.now(UTC) - timedelta(seconds=settings.JWT_LEEWAY):
            raise InvalidToken("session expired")
        created = timestamp(created_at)
        claims = {
            "sub": str(user_id),
            "email": email,
            "name": name,
            # As for a JWT: when the credential was issued (logout-all refuses older ones) and until when it lives.
            "iat": created.timestamp() if created else None,
            "exp": expires.timestamp(),
        }
        check_subject(claims)
        return claims


def parse_session_token(value: str, *, secret: str, require_signed: bool) -> str:
    """The session token in a bearer value: signed (also URL-encoded, as in the cookie), or raw if allowed."""
    if "%" in value:
        value = unquote(value)
    token, dot, signature = value.rpartition(".")
    if not dot:
        if require_signed:
            raise InvalidToken("unsigned session token")
        if not RAW_SESSION_TOKEN.fullmatch(value):
            raise InvalidToken("malformed session token")
        return value
    if not token or len(token) > MAX_SESSION_TOKEN_LENGTH or len(signature) != SESSION_SIGNATURE_LENGTH:
        raise InvalidToken("malformed signed session token")
    expected = base64.b64encode(hmac.new(secret.encode(), token.encode(), hashlib.sha256).digest())
    if not hmac.compare_digest(expected, signature.encode()):
        raise InvalidToken("bad session token signature")
    return token


def _find_session(connection: Connection, token: str) -> tuple[Any, ...] | None:
    row = connection.execute(SESSION_QUERY, {"token": token}).first()
    return None if row is None else tuple(row)
