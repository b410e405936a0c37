"""Settings: the only place that reads the environment (or `.env`)."""

from __future__ import annotations

import logging
import secrets
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Request
from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

logger = logging.getLogger(__name__)

DEV_SECRET_FILE = Path(".better_auth_secret")
MIN_SECRET_LENGTH = 32


def _split_csv(value: Any) -> Any:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


def normalize_database_url(url: str) -> str:
    """Accept the URL forms Heroku/Neon hand out and pin the psycopg2 driver for PostgreSQL."""
    url = url.strip()
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg2://" + url[len(prefix) :]
    return url


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=True
    )

    ENVIRONMENT: str = "development"
    DATABASE_URL: str = "sqlite:///./todo.db"
    BETTER_AUTH_SECRET: str = Field(default="", repr=False)
    JWT_ALGORITHM: str = "HS256"
    JWT_EXPIRATION_DELTA: int = Field(default=604800, ge=60)
    JWT_ISSUER: str = "todo-api"
    CORS_ORIGINS: Annotated[list[str], NoDecode] = Field(
        default=["http://localhost:3000"],
        validation_alias=AliasChoices("CORS_ORIGINS", "CORS_ALLOWED_ORIGINS"),
    )
    LOG_LEVEL: str = "INFO"
    HOST: str = Field(default="127.0.0.1", validation_alias=AliasChoices("HOST", "API_HOST"))
    PORT: int = Field(default=8000, ge=1, le=65535, validation_alias=AliasChoices("PORT", "API_PORT"))
    DB_POOL_SIZE: int = Field(default=10, ge=1)
    DB_MAX_OVERFLOW: int = Field(default=30, ge=0)
    DB_POOL_PRE_PING: bool = True
    DB_POOL_RECYCLE: int = 300
    BCRYPT_ROUNDS: int = Field(default=12, ge=4, le=31)
    TRASH_RETENTION_DAYS: int = Field(default=30, ge=0)

    @field_validator("CORS_ORIGINS", mode="before")
    @classmethod
    def _parse_origins(cls, value: Any) -> Any:
        return _split_csv(value)

    @field_validator("DATABASE_URL")
    @classmethod
    def _normalize_url(cls, value: str) -> str:
        return normalize_database_url(value)

    @field_validator("JWT_ALGORITHM")
    @classmethod
    def _only_hs256(cls, value: str) -> str:
        if value != "HS256":
            raise ValueError("only HS256 is supported for tokens signed with BETTER_AUTH_SECRET")
        return value

    @model_validator(mode="after")
    def _check_secret(self) -> Settings:
        if self.is_development:
            if not self.BETTER_AUTH_SECRET:
                self.BETTER_AUTH_SECRET = _development_secret()
        elif len(self.BETTER_AUTH_SECRET) < MIN_SECRET_LENGTH:
            raise ValueError(
                f"BETTER_AUTH_SECRET must be set to at least {MIN_SECRET_LENGTH} characters "
                f"when ENVIRONMENT={self.ENVIRONMENT}"
            )
        return self

    @property
    def is_development(self) -> bool:
        return self.ENVIRONMENT.lower() in {"development", "dev", "local"}

    @property
    def is_sqlite(self) -> bool:
        return self.DATABASE_URL.startswith("sqlite")


def _development_secret() -> str:
    """A per-checkout secret kept in a git-ignored file, so tokens survive a restart."""
    try:
        existing = DEV_SECRET_FILE.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        existing = ""
    if len(existing) >= MIN_SECRET_LENGTH:
        return existing
    secret = secrets.token_urlsafe(48)
    DEV_SECRET_FILE.write_text(secret + "\n", encoding="utf-8")
    DEV_SECRET_FILE.chmod(0o600)
    logger.warning("BETTER_AUTH_SECRET is not set: generated a development secret in %s", DEV_SECRET_FILE)
    return secret


@lru_cache
def get_settings() -> Settings:
    return Settings()


def _app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(_app_settings)]
"""The settings the running app was built with (tests build apps with their own)."""
