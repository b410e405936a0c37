"""Settings for a Better Auth frontend's own tokens: defaults, derived values, and what refuses to start."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from pydantic import ValidationError

from todo_api.config import Settings

STRONG_SECRET = "s" * 32
NAMES = (
    "BETTER_AUTH_URL",
    "BETTER_AUTH_JWKS_URL",
    "BETTER_AUTH_ISSUER",
    "BETTER_AUTH_AUDIENCE",
    "BETTER_AUTH_ALGORITHMS",
    "BETTER_AUTH_JWKS_CACHE_SECONDS",
    "BETTER_AUTH_SESSION_LOOKUP",
    "BETTER_AUTH_DATABASE_URL",
    "BETTER_AUTH_REQUIRE_SIGNED_SESSION",
    "JWT_LEEWAY",
    "DATABASE_URL",
)


Build = Callable[..., Settings]


@pytest.fixture
def settings_from_env(monkeypatch: pytest.MonkeyPatch) -> Build:
    def build(**env: str) -> Settings:
        for name in NAMES:
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("ENVIRONMENT", "production")
        monkeypatch.setenv("BETTER_AUTH_SECRET", STRONG_SECRET)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        return Settings(_env_file=None)

    return build


def test_defaults(settings_from_env: Build) -> None:
    settings = settings_from_env()
    assert settings.BETTER_AUTH_URL == ""
    assert settings.BETTER_AUTH_JWKS_URL == ""  # no JWKS: asymmetric tokens are refused
    assert settings.BETTER_AUTH_ISSUER == [] and settings.BETTER_AUTH_AUDIENCE == []
    assert settings.BETTER_AUTH_ALGORITHMS == ["EdDSA", "ES256", "ES512", "PS256", "RS256"]
    assert settings.BETTER_AUTH_JWKS_CACHE_SECONDS == 300
    assert settings.JWT_LEEWAY == 30
    assert settings.BETTER_AUTH_SESSION_LOOKUP is False
    assert settings.BETTER_AUTH_DATABASE_URL == ""  # Better Auth's tables are in DATABASE_URL
    assert settings.BETTER_AUTH_REQUIRE_SIGNED_SESSION is False


@pytest.mark.parametrize(
    ("url", "jwks_url", "origin"),
    [
        ("http://localhost:3000", "http://localhost:3000/api/auth/jwks", "http://localhost:3000"),
        ("http://localhost:3000//", "http://localhost:3000/api/auth/jwks", "http://localhost:3000"),
        (" https://app.example.com/ ", "https://app.example.com/api/auth/jwks", "https://app.example.com"),
        ("https://example.com/shop/", "https://example.com/shop/api/auth/jwks", "https://example.com"),
    ],
)
def test_better_auth_url_gives_the_jwks_url_issuer_and_audience(
    settings_from_env: Build, url: str, jwks_url: str, origin: str
) -> None:
    settings = settings_from_env(BETTER_AUTH_URL=url)
    assert settings.BETTER_AUTH_JWKS_URL == jwks_url
    assert settings.BETTER_AUTH_ISSUER == [origin]
    assert settings.BETTER_AUTH_AUDIENCE == [origin]


def test_explicit_values_win(settings_from_env: Build) -> None:
    settings = settings_from_env(
        BETTER_AUTH_URL="http://localhost:3000",
        BETTER_AUTH_JWKS_URL="https://auth.example/.well-known/jwks.json/",
        BETTER_AUTH_ISSUER=" https://auth.example , https://old.example ,",
        BETTER_AUTH_AUDIENCE="todo-api",
    )
    assert settings.BETTER_AUTH_JWKS_URL == "https://auth.example/.well-known/jwks.json"
    assert settings.BETTER_AUTH_ISSUER == ["https://auth.example", "https://old.example"]
    assert settings.BETTER_AUTH_AUDIENCE == ["todo-api"]


@pytest.mark.parametrize(
    "given",
    [{}, {"BETTER_AUTH_ISSUER": "https://auth.example"}, {"BETTER_AUTH_AUDIENCE": "https://api.example"}],
    ids=["neither", "issuer-only", "audience-only"],
)
def test_a_jwks_url_alone_needs_issuer_and_audience(settings_from_env: Build, given: dict[str, str]) -> None:
    with pytest.raises(ValidationError, match="needs both BETTER_AUTH_ISSUER and BETTER_AUTH_AUDIENCE"):
        settings_from_env(BETTER_AUTH_JWKS_URL="https://auth.example/jwks", **given)


def test_a_jwks_url_with_issuer_and_audience(settings_from_env: Build) -> None:
    settings = settings_from_env(
        BETTER_AUTH_JWKS_URL="https://auth.example/jwks",
        BETTER_AUTH_ISSUER="https://auth.example",
        BETTER_AUTH_AUDIENCE="https://api.example, https://auth.example",
    )
    assert settings.BETTER_AUTH_URL == ""
    assert settings.BETTER_AUTH_AUDIENCE == ["https://api.example", "https://auth.example"]


@pytest.mark.parametrize("name", ["BETTER_AUTH_URL", "BETTER_AUTH_JWKS_URL"])
@pytest.mark.parametrize("value", ["localhost:3000", "ftp://example.com", "file:///etc/passwd", "https://"])
def test_urls_must_be_http(settings_from_env: Build, name: str, value: str) -> None:
    with pytest.raises(ValidationError, match=f"{name} must be an http:// or https:// URL"):
        settings_from_env(**{name: value})


def test_algorithms_are_a_trimmed_list(settings_from_env: Build) -> None:
    settings = settings_from_env(BETTER_AUTH_ALGORITHMS=" EdDSA , RS256,")
    assert settings.BETTER_AUTH_ALGORITHMS == ["EdDSA", "RS256"]


@pytest.mark.parametrize("value", ["HS256", "EdDSA,none", "eddsa", "", ","])
def test_only_the_plugins_algorithms_are_allowed(settings_from_env: Build, value: str) -> None:
    with pytest.raises(ValidationError, match="BETTER_AUTH_ALGORITHMS must be some of"):
        settings_from_env(BETTER_AUTH_ALGORITHMS=value)


@pytest.mark.parametrize("value", ["0", "300"])
def test_leeway_up_to_300_seconds(settings_from_env: Build, value: str) -> None:
    assert settings_from_env(JWT_LEEWAY=value).JWT_LEEWAY == int(value)


@pytest.mark.parametrize(
    ("name", "value"),
    [("JWT_LEEWAY", "301"), ("JWT_LEEWAY", "-1"), ("BETTER_AUTH_JWKS_CACHE_SECONDS", "0")],
)
def test_out_of_range_numbers_refuse_to_start(settings_from_env: Build, name: str, value: str) -> None:
    with pytest.raises(ValidationError, match=name):
        settings_from_env(**{name: value})


def test_better_auth_database_url(settings_from_env: Build) -> None:
    settings = settings_from_env(
        BETTER_AUTH_SESSION_LOOKUP="true",
        BETTER_AUTH_REQUIRE_SIGNED_SESSION="true",
        BETTER_AUTH_DATABASE_URL="postgres://u:p@frontend.example/auth?sslmode=require",
    )
    assert settings.BETTER_AUTH_SESSION_LOOKUP and settings.BETTER_AUTH_REQUIRE_SIGNED_SESSION
    assert settings.BETTER_AUTH_DATABASE_URL == "postgresql+psycopg2://u:p@frontend.example/auth?sslmode=require"
    assert "u:p@frontend" not in repr(settings)


def test_better_auth_database_url_equal_to_ours_means_ours(settings_from_env: Build) -> None:
    settings = settings_from_env(
        DATABASE_URL="postgresql://root@127.0.0.1/todo",
        BETTER_AUTH_DATABASE_URL="postgres://root@127.0.0.1/todo",
    )
    assert settings.BETTER_AUTH_DATABASE_URL == ""
