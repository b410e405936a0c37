"""Settings: defaults, aliases, URL forms and the secret rules."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from todo_api.config import DEV_SECRET_FILE, Settings, create_development_secret, export_to_workers, get_settings

PROJECT_ROOT = Path(__file__).resolve().parents[1]

STRONG_SECRET = "s" * 32


def use_env(monkeypatch: pytest.MonkeyPatch, **env: str) -> None:
    for name in ("ENVIRONMENT", "BETTER_AUTH_SECRET", "DATABASE_URL", "CORS_ORIGINS", "CORS_ALLOWED_ORIGINS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)


def settings_from_env(monkeypatch: pytest.MonkeyPatch, **env: str) -> Settings:
    use_env(monkeypatch, **env)
    return Settings(_env_file=None)


@pytest.mark.usefixtures("tmp_cwd")
def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_from_env(monkeypatch)
    assert settings.DATABASE_URL == "sqlite:///./todo.db"
    assert settings.ENVIRONMENT == "development"
    assert settings.JWT_EXPIRATION_DELTA == 604800
    assert settings.JWT_ISSUER == "todo-api"
    assert settings.CORS_ORIGINS == ["http://localhost:3000"]
    assert settings.BCRYPT_ROUNDS == 12
    assert (settings.HOST, settings.PORT) == ("127.0.0.1", 8000)
    assert (settings.DB_CONNECT_TIMEOUT, settings.DB_POOL_TIMEOUT, settings.DB_STATEMENT_TIMEOUT) == (5, 5, 15)
    assert (settings.WEB_CONCURRENCY, settings.PROMETHEUS_MULTIPROC_DIR) == (1, "")
    assert (settings.LOG_FORMAT, settings.log_format) == (None, "console")


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
    """What `todo-api serve` / `migrate` do first: the file is created once, and every Settings reads it."""
    use_env(monkeypatch)
    create_development_secret()
    secret_file = tmp_cwd / DEV_SECRET_FILE
    secret = secret_file.read_text().strip()
    assert len(secret) >= 32
    assert secret_file.stat().st_mode & 0o777 == 0o600
    create_development_secret()
    assert secret_file.read_text().strip() == secret
    assert settings_from_env(monkeypatch).BETTER_AUTH_SECRET == secret
    assert settings_from_env(monkeypatch).BETTER_AUTH_SECRET == secret


def test_an_unusable_development_secret_file_is_replaced(tmp_cwd: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret_file = tmp_cwd / DEV_SECRET_FILE
    secret_file.write_text("too short\n")
    secret_file.chmod(0o644)
    use_env(monkeypatch)
    create_development_secret()
    secret = secret_file.read_text().strip()
    assert len(secret) >= 32
    assert secret_file.stat().st_mode & 0o777 == 0o600
    assert settings_from_env(monkeypatch).BETTER_AUTH_SECRET == secret


def test_constructing_settings_writes_no_file(
    tmp_cwd: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="todo_api.config")
    first = settings_from_env(monkeypatch)
    second = settings_from_env(monkeypatch)
    assert list(tmp_cwd.iterdir()) == []
    # Without the file each process signs with its own random secret, and says so.
    assert len(first.BETTER_AUTH_SECRET) >= 32
    assert first.BETTER_AUTH_SECRET != second.BETTER_AUTH_SECRET
    assert [record.getMessage() for record in caplog.records] == [
        "BETTER_AUTH_SECRET is not set and .better_auth_secret holds none: tokens are signed with a random secret "
        "that ends with this process (`todo-api serve` and `todo-api migrate` create the file)"
    ] * 2


@pytest.mark.parametrize(
    "env", [{"BETTER_AUTH_SECRET": STRONG_SECRET}, {"ENVIRONMENT": "production"}, {"ENVIRONMENT": "test"}]
)
def test_no_development_secret_file_outside_development_or_with_a_secret(
    tmp_cwd: Path, monkeypatch: pytest.MonkeyPatch, env: dict[str, str]
) -> None:
    use_env(monkeypatch, **env)
    create_development_secret()
    assert list(tmp_cwd.iterdir()) == []


def test_jwt_algorithm_is_no_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tokens signed with the shared secret are always HS256 (tests/auth/test_auth.py: other algorithms are 401)."""
    settings = settings_from_env(monkeypatch, JWT_ALGORITHM="none", BETTER_AUTH_SECRET=STRONG_SECRET)
    assert "JWT_ALGORITHM" not in Settings.model_fields
    assert not hasattr(settings, "JWT_ALGORITHM")


def test_env_example_shows_only_settings_with_their_defaults(tmp_cwd: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every name .env.example shows (set or commented out) is a setting, and what it sets is the default."""
    example = (PROJECT_ROOT / ".env.example").read_text()
    names = set(re.findall(r"^#? ?([A-Z][A-Z0-9_]+)=", example, flags=re.MULTILINE))
    aliases = {"CORS_ALLOWED_ORIGINS", "API_HOST", "API_PORT"}
    assert names - set(Settings.model_fields) - aliases == set()
    assert {"LOG_FORMAT", "WEB_CONCURRENCY", "PROMETHEUS_MULTIPROC_DIR"} <= names
    for name in set(Settings.model_fields) | aliases:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("BETTER_AUTH_SECRET", STRONG_SECRET)
    (tmp_cwd / ".env").write_text(example)
    assert Settings().model_dump() == Settings(_env_file=None).model_dump()


def test_dotenv_file_is_read(tmp_cwd: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JWT_ISSUER", raising=False)
    (tmp_cwd / ".env").write_text(f"JWT_ISSUER=from-dotenv\nBETTER_AUTH_SECRET={STRONG_SECRET}\n")
    assert Settings().JWT_ISSUER == "from-dotenv"


def test_password_hashing_takes_this_workers_share_of_the_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    cores = len(os.sched_getaffinity(0))
    monkeypatch.delenv("PASSWORD_HASH_CONCURRENCY", raising=False)
    monkeypatch.setenv("WEB_CONCURRENCY", "1")
    assert settings_from_env(monkeypatch, BETTER_AUTH_SECRET=STRONG_SECRET).password_hash_concurrency == cores
    monkeypatch.setenv("WEB_CONCURRENCY", str(cores * 2))
    assert settings_from_env(monkeypatch, BETTER_AUTH_SECRET=STRONG_SECRET).password_hash_concurrency == 1
    monkeypatch.setenv("PASSWORD_HASH_CONCURRENCY", "3")
    assert settings_from_env(monkeypatch, BETTER_AUTH_SECRET=STRONG_SECRET).password_hash_concurrency == 3


def test_export_to_workers_is_what_their_settings_read(monkeypatch: pytest.MonkeyPatch) -> None:
    # Registered with monkeypatch first, so the environment is restored after the test.
    monkeypatch.setenv("WEB_CONCURRENCY", "1")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "")
    monkeypatch.setenv("ENVIRONMENT", "test")
    monkeypatch.setenv("BETTER_AUTH_SECRET", STRONG_SECRET)
    before = get_settings()
    try:
        export_to_workers(WEB_CONCURRENCY=3, PROMETHEUS_MULTIPROC_DIR="/tmp/metrics")
        after = get_settings()
        assert (os.environ["WEB_CONCURRENCY"], os.environ["PROMETHEUS_MULTIPROC_DIR"]) == ("3", "/tmp/metrics")
        assert after is not before
        assert (after.WEB_CONCURRENCY, after.PROMETHEUS_MULTIPROC_DIR) == (3, "/tmp/metrics")
        with pytest.raises(ValueError, match="NOT_A_SETTING is not a setting"):
            export_to_workers(NOT_A_SETTING=1)
        assert "NOT_A_SETTING" not in os.environ
    finally:
        get_settings.cache_clear()


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, "console"),
        ({"ENVIRONMENT": "local"}, "console"),
        ({"ENVIRONMENT": "production"}, "json"),
        ({"ENVIRONMENT": "test"}, "json"),
        ({"ENVIRONMENT": "production", "LOG_FORMAT": "console"}, "console"),
        ({"LOG_FORMAT": " JSON "}, "json"),
        ({"LOG_FORMAT": ""}, "console"),
    ],
)
def test_log_format_follows_the_environment(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected: str
) -> None:
    monkeypatch.delenv("LOG_FORMAT", raising=False)
    assert settings_from_env(monkeypatch, BETTER_AUTH_SECRET=STRONG_SECRET, **env).log_format == expected


def test_log_format_is_console_or_json(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError, match="LOG_FORMAT"):
        settings_from_env(monkeypatch, LOG_FORMAT="xml", BETTER_AUTH_SECRET=STRONG_SECRET)


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
