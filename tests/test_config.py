"""Settings: defaults, aliases, URL forms and the secret rules."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from todo_api.config import DEV_SECRET_FILE, Settings

STRONG_SECRET = "s" * 32


def settings_from_env(monkeypatch: pytest.MonkeyPatch, **env: str) -> Settings:
    for name in ("ENVIRONMENT", "BETTER_AUTH_SECRET", "DATABASE_URL", "CORS_ORIGINS", "CORS_ALLOWED_ORIGINS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings(_env_file=None)


@pytest.mark.usefixtures("tmp_cwd")
def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_from_env(monkeypatch)
    assert settings.DATABASE_URL == "sqlite:///./todo.db"
    assert settings.ENVIRONMENT == "development"
    assert settings.JWT_ALGORITHM == "HS256"
    assert settings.JWT_EXPIRATION_DELTA == 604800
    assert settings.JWT_ISSUER == "todo-api"
    assert settings.CORS_ORIGINS == ["http://localhost:3000"]
    assert settings.BCRYPT_ROUNDS == 12
    assert (settings.HOST, settings.PORT) == ("127.0.0.1", 8000)
    assert (settings.DB_CONNECT_TIMEOUT, settings.DB_POOL_TIMEOUT, settings.DB_STATEMENT_TIMEOUT) == (5, 5, 15)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgres://u:p@host/db", "postgresql+psycopg2://u:p@host/db"),
        ("postgresql://u:p@host/db?sslmode=require", "postgresql+psycopg2://u:p@host/db?sslmode=require"),
        ("postgresql+psycopg2://u@host/db", "postgresql+psycopg2://u@host/db"),
        (  # Neon's pooled connection string, pasted as is
            "postgresql://u:p@ep-x-1-pooler.us-east-2.aws.neon.tech/neondb?sslmode=require&channel_binding=require",
            "postgresql+psycopg2://u:p@ep-x-1-pooler.us-east-2.aws.neon.tech/neondb?sslmode=require&channel_binding=require",
        ),
        ("sqlite:///./other.db", "sqlite:///./other.db"),
    ],
)
def test_database_url_forms(monkeypatch: pytest.MonkeyPatch, given: str, expected: str) -> None:
    settings = settings_from_env(monkeypatch, DATABASE_URL=given, BETTER_AUTH_SECRET=STRONG_SECRET)
    assert settings.DATABASE_URL == expected


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DB_CONNECT_TIMEOUT", "1"),
        ("DB_POOL_TIMEOUT", "0"),
        ("DB_STATEMENT_TIMEOUT", "0"),
        ("DB_STATEMENT_TIMEOUT", "-1"),
    ],
)
def test_database_timeouts_have_floors(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    with pytest.raises(ValidationError, match=name):
        settings_from_env(monkeypatch, **{name: value})


def test_cors_origins_are_comma_separated(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_from_env(
        monkeypatch, CORS_ORIGINS=" http://a.example , https://b.example,", BETTER_AUTH_SECRET=STRONG_SECRET
    )
    assert settings.CORS_ORIGINS == ["http://a.example", "https://b.example"]


def test_cors_allowed_origins_alias(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_from_env(
        monkeypatch, CORS_ALLOWED_ORIGINS="https://app.example", BETTER_AUTH_SECRET=STRONG_SECRET
    )
    assert settings.CORS_ORIGINS == ["https://app.example"]


def test_api_host_and_port_aliases(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HOST", raising=False)
    monkeypatch.delenv("PORT", raising=False)
    settings = settings_from_env(monkeypatch, API_HOST="0.0.0.0", API_PORT="9000", BETTER_AUTH_SECRET=STRONG_SECRET)
    assert (settings.HOST, settings.PORT) == ("0.0.0.0", 9000)


@pytest.mark.parametrize("secret", ["", "short-secret"])
def test_production_refuses_a_missing_or_short_secret(monkeypatch: pytest.MonkeyPatch, secret: str) -> None:
    with pytest.raises(ValidationError, match="BETTER_AUTH_SECRET must be set to at least 32 characters"):
        settings_from_env(monkeypatch, ENVIRONMENT="production", BETTER_AUTH_SECRET=secret)


def test_production_accepts_a_long_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_from_env(monkeypatch, ENVIRONMENT="production", BETTER_AUTH_SECRET=STRONG_SECRET)
    assert settings.BETTER_AUTH_SECRET == STRONG_SECRET
    assert STRONG_SECRET not in repr(settings)


def test_development_generates_and_keeps_a_secret(tmp_cwd: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = settings_from_env(monkeypatch)
    assert len(first.BETTER_AUTH_SECRET) >= 32
    secret_file = tmp_cwd / DEV_SECRET_FILE
    assert secret_file.read_text().strip() == first.BETTER_AUTH_SECRET
    assert secret_file.stat().st_mode & 0o077 == 0
    second = settings_from_env(monkeypatch)
    assert second.BETTER_AUTH_SECRET == first.BETTER_AUTH_SECRET


def test_only_hs256_is_accepted_for_the_shared_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError, match="only HS256"):
        settings_from_env(monkeypatch, JWT_ALGORITHM="none", BETTER_AUTH_SECRET=STRONG_SECRET)


def test_dotenv_file_is_read(tmp_cwd: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JWT_ISSUER", raising=False)
    (tmp_cwd / ".env").write_text(f"JWT_ISSUER=from-dotenv\nBETTER_AUTH_SECRET={STRONG_SECRET}\n")
    assert Settings().JWT_ISSUER == "from-dotenv"


def test_password_hashing_takes_this_workers_share_of_the_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    cores = len(os.sched_getaffinity(0))
    settings = settings_from_env(monkeypatch, BETTER_AUTH_SECRET=STRONG_SECRET)
    monkeypatch.setenv("WEB_CONCURRENCY", "1")
    assert settings.password_hash_concurrency == cores
    monkeypatch.setenv("WEB_CONCURRENCY", str(cores * 2))
    assert settings.password_hash_concurrency == 1
    monkeypatch.setenv("PASSWORD_HASH_CONCURRENCY", "3")
    assert settings_from_env(monkeypatch, BETTER_AUTH_SECRET=STRONG_SECRET).password_hash_concurrency == 3


@pytest.mark.parametrize(
    ("url", "setting", "expected"),
    [
        ("postgresql://u@ep-cool-1234-pooler.eu-central-1.aws.neon.tech/db?sslmode=require", None, True),
        ("postgresql://u@ep-cool-1234.eu-central-1.aws.neon.tech/db?sslmode=require", None, False),
        ("postgresql://u@127.0.0.1:6432/db", "true", True),
        ("postgresql://u@db-pooler.internal/db", "false", False),
    ],
)
def test_transaction_pooler_detection(
    monkeypatch: pytest.MonkeyPatch, url: str, setting: str | None, expected: bool
) -> None:
    env = {"DATABASE_URL": url, "BETTER_AUTH_SECRET": STRONG_SECRET}
    if setting is not None:
        env["DB_TRANSACTION_POOLER"] = setting
    else:
        monkeypatch.delenv("DB_TRANSACTION_POOLER", raising=False)
    assert settings_from_env(monkeypatch, **env).behind_transaction_pooler is expected
