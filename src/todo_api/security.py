"""Password hashing and the tokens this service signs. Pure functions: no database, no request."""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from types import MappingProxyType
from typing import Any

import jwt
from passlib.context import CryptContext

from todo_api.config import Settings
from todo_api.db import as_utc

# bcrypt alone ignores everything past 72 bytes; bcrypt_sha256 pre-hashes so every character counts.
# Plain $2b$ hashes (from other tools or older rows) still verify.
_SCHEMES = ["bcrypt_sha256", "bcrypt"]
_DUMMY_PASSWORD = "dummy password for timing equalization"  # noqa: S105 - not a credential
# The one algorithm for tokens signed with the shared secret (ours and a Better Auth frontend's).
ALGORITHM = "HS256"


class InvalidToken(Exception):
    """The token is not provably valid; the reason is for logs, never for the client."""


@lru_cache
def _context(rounds: int) -> CryptContext:
    return CryptContext(schemes=_SCHEMES, default="bcrypt_sha256", bcrypt_sha256__rounds=rounds)


@lru_cache
def _dummy_hash(rounds: int) -> str:
    return str(_context(rounds).hash(_DUMMY_PASSWORD))


def hash_password(password: str, *, rounds: int) -> str:
    return str(_context(rounds).hash(password))


def verify_password(password: str, password_hash: str | None, *, rounds: int) -> bool:
    """Check a password; with no hash, burn the same time on a dummy so unknown emails cost the same."""
    context = _context(rounds)
    if not password_hash:
        context.verify(password, _dummy_hash(rounds))
        return False
    try:
        return bool(context.verify(password, password_hash))
    except (ValueError, TypeError):  # a corrupt or foreign hash never authenticates
        return False


@lru_cache
def _common_passwords() -> frozenset[str]:
    from zxcvbn.frequency_lists import FREQUENCY_LISTS

    return frozenset(FREQUENCY_LISTS["passwords"])


def is_common_password(password: str) -> bool:
    return password.lower() in _common_passwords()


def new_opaque_token() -> str:
    """A random, URL-safe secret for refresh and password-reset tokens (256 bits)."""
    return secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """What is stored for a high-entropy token: a plain SHA-256 suffices (no password to brute-force)."""
    return hashlib.sha256(token.encode()).hexdigest()


def create_access_token(
    *, subject: str, session_id: str, email: str | None, name: str | None, settings: Settings
) -> tuple[str, int]:
    """A signed HS256 token for one of our users, bound to a session, and its lifetime in seconds."""
    now = datetime.now(UTC)
    lifetime = settings.JWT_EXPIRATION_DELTA
    claims: dict[str, Any] = {
        "sub": subject,
        "sid": session_id,
        "iat": now,
        "exp": now + timedelta(seconds=lifetime),
        "iss": settings.JWT_ISSUER,
        "email": email,
        "name": name,
    }
    return jwt.encode(claims, settings.BETTER_AUTH_SECRET, algorithm=ALGORITHM), lifetime


VERIFIED_TOKENS_CACHED = 4096


def decode_token(token: str, *, settings: Settings) -> dict[str, Any]:
    """Verify an HS256 token signed with the shared secret (ours or a Better Auth frontend's).

    A client sends the same token with every request: its signature and the form of its claims are checked once
    (`_signed_claims`, cached by the exact token), its times on every use.
    """
    try:
        claims = _signed_claims(token, settings.BETTER_AUTH_SECRET, ALGORITHM)
    except jwt.PyJWTError as exc:
        raise InvalidToken(type(exc).__name__) from exc
    check_times(claims, leeway=settings.JWT_LEEWAY)
    return dict(claims)


@lru_cache(maxsize=VERIFIED_TOKENS_CACHED)
def _signed_claims(token: str, secret: str, algorithm: str) -> Mapping[str, Any]:
    """The claims of a token whose signature is valid and whose `sub` and `exp` are present (errors are not
    cached: a bad token is checked in full every time)."""
    claims = jwt.decode(
        token,
        secret,
        algorithms=[algorithm],
        options={
            "require": ["exp", "sub"],
            "verify_aud": False,
            "verify_exp": False,  # times change, the cached signature check does not: `check_times`
            "verify_nbf": False,
            "verify_iat": False,
        },
    )
    check_subject(claims)
    return MappingProxyType(claims)


def _instant(claims: Mapping[str, Any], name: str, *, required: bool = False) -> float | None:
    value = claims.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise InvalidToken(f"bad {name}")
    return float(value)


def check_times(claims: Mapping[str, Any], *, leeway: float) -> None:
    """`exp` (required) not past, `nbf` and `iat` not in the future, each give or take `leeway` seconds."""
    now = time.time()
    expires = _instant(claims, "exp", required=True)
    if expires is not None and expires <= now - leeway:
        raise InvalidToken("ExpiredSignatureError")
    not_before = _instant(claims, "nbf")
    if not_before is not None and not_before > now + leeway:
        raise InvalidToken("ImmatureSignatureError")
    issued = _instant(claims, "iat")
    if issued is not None and issued > now + leeway:
        raise InvalidToken("ImmatureSignatureError")


def check_subject(claims: dict[str, Any]) -> None:
    """`sub` becomes a users.id: a non-blank string of at most 255 characters."""
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject.strip() or len(subject) > 255:
        raise InvalidToken("bad subject")


def timestamp(value: object) -> datetime | None:
    """An instant as tokens and Better Auth's adapters carry it: a datetime (naive = UTC), an ISO-8601 string, or an
    epoch number, in seconds (JWT claims) or, past 10^11 (the year 5138 in seconds), in milliseconds (Better Auth's
    stores). None for anything else."""
    if isinstance(value, datetime):
        return as_utc(value)
    try:
        if isinstance(value, str):
            return as_utc(datetime.fromisoformat(value.strip()))
        if isinstance(value, int | float) and not isinstance(value, bool):
            seconds = value / 1000 if value > 10**11 else value
            return datetime.fromtimestamp(seconds, UTC)
    except (ValueError, OverflowError, OSError):
        pass
    return None
