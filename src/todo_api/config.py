"""Settings: the only place that reads the environment (or `.env`)."""

from __future__ import annotations

import ipaddress
import logging
import os
import secrets
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from fastapi import Depends, Request
from pydantic import AliasChoices, Field, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

logger = logging.getLogger(__name__)

# Where `todo-api serve` / `migrate` keep a development secret (in the working directory; git-ignored).
DEV_SECRET_FILE = Path(".better_auth_secret")
DEVELOPMENT_ENVIRONMENTS = {"development", "dev", "local"}
MIN_SECRET_LENGTH = 32
# What Better Auth's jwt plugin can sign with (EdDSA is Ed25519, its default).
BETTER_AUTH_ALGORITHMS = ("EdDSA", "ES256", "ES512", "PS256", "RS256")
BETTER_AUTH_JWKS_PATH = "/api/auth/jwks"
MAX_JWT_LEEWAY = 300


def _split_csv(value: Any) -> Any:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


def _http_url(value: str, name: str) -> str:
    """An http(s) URL without trailing slashes ("" stays "": not configured)."""
    value = value.strip().rstrip("/")
    if value:
        parts = urlsplit(value)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ValueError(f"{name} must be an http:// or https:// URL")
    return value


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def normalize_database_url(url: str) -> str:
    """Accept the URL forms Heroku/Neon hand out and pin the psycopg2 driver for PostgreSQL."""
    url = url.strip()
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg2://" + url[len(prefix) :]
    return url


class _SecretSettings(BaseSettings):
    """The settings that decide where the shared secret comes from: read alone (`create_development_secret`)
    before the rest, whose validation needs the secret."""

    # `hide_input_in_errors`: pydantic's message for a refused value quotes its start and end, and several settings
    # are secrets (BETTER_AUTH_SECRET, VAPID_PRIVATE_KEY, passwords in DATABASE_URL): the messages name the setting.
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=True, hide_input_in_errors=True
    )

    ENVIRONMENT: str = "development"
    BETTER_AUTH_SECRET: str = Field(default="", repr=False)

    @property
    def is_development(self) -> bool:
        return self.ENVIRONMENT.lower() in DEVELOPMENT_ENVIRONMENTS


class Settings(_SecretSettings):
    DATABASE_URL: str = "sqlite:///./todo.db"
    JWT_EXPIRATION_DELTA: int = Field(default=604800, ge=60)
    JWT_ISSUER: str = "todo-api"
    CORS_ORIGINS: Annotated[list[str], NoDecode] = Field(
        default=["http://localhost:3000"],
        validation_alias=AliasChoices("CORS_ORIGINS", "CORS_ALLOWED_ORIGINS"),
    )
    LOG_LEVEL: str = "INFO"
    LOG_FORMAT: Literal["console", "json"] | None = None  # default: console in development, else json
    HOST: str = Field(default="127.0.0.1", validation_alias=AliasChoices("HOST", "API_HOST"))
    PORT: int = Field(default=8000, ge=1, le=65535, validation_alias=AliasChoices("PORT", "API_PORT"))
    # As many threads run requests as the pool holds connections (`main.create_app`). One process runs Python on one
    # core at a time, so threads beyond those needed to cover the database's round trips only add GIL hand-offs: on
    # loopback, 4 threads served a task read with less CPU and half the p95 of 10. Raise it for a distant database.
    # Overflow connections are closed when they come back to a full pool: under steady load above DB_POOL_SIZE, one
    # is reopened every few requests (a new PostgreSQL backend each time). So the default keeps them all in the pool.
    DB_POOL_SIZE: int = Field(default=4, ge=1)
    DB_MAX_OVERFLOW: int = Field(default=0, ge=0)
    DB_POOL_PRE_PING: bool = True
    # Only connections idle longer than this are probed before use (one just used is known to be alive).
    DB_POOL_PING_IDLE: float = Field(default=1, ge=0)
    DB_POOL_RECYCLE: int = 300
    # libpq counts a connect timeout of 1 as 2, so 2 is the honest minimum.
    DB_CONNECT_TIMEOUT: int = Field(default=5, ge=2)
    DB_POOL_TIMEOUT: float = Field(default=5, gt=0)
    DB_STATEMENT_TIMEOUT: float = Field(default=15, gt=0)
    # Behind a transaction-mode pooler (Neon's -pooler endpoints, PgBouncer) session settings cannot be sent at
    # connect; None: assume one when the host name says "-pooler".
    DB_TRANSACTION_POOLER: bool | None = None
    BCRYPT_ROUNDS: int = Field(default=12, ge=4, le=31)
    # Password hashes computed at once per process; 0: this process's share of the CPUs (cores / workers).
    PASSWORD_HASH_CONCURRENCY: int = Field(default=0, ge=0)
    JWT_LEEWAY: int = Field(default=30, ge=0, le=MAX_JWT_LEEWAY)
    TRASH_RETENTION_DAYS: int = Field(default=30, ge=0)

    # Hostile input and HTTP hygiene.
    MAX_BODY_BYTES: int = Field(default=1048576, ge=1024)
    DOCS_ENABLED: bool | None = None  # default: off when ENVIRONMENT=production, else on
    HSTS_SECONDS: int = Field(default=0, ge=0)

    # Observability and process management.
    METRICS_ENABLED: bool = False
    GRACEFUL_TIMEOUT: int = Field(default=20, ge=0)
    # Worker processes; `todo-api serve --workers` sets it for them (`export_to_workers`).
    WEB_CONCURRENCY: int = Field(default=1, ge=1)
    # Where every worker writes its metric samples (prometheus_client's multiprocess mode; empty at start); "": one
    # process. With METRICS_ENABLED=true, `todo-api serve` makes a fresh folder when it is unset.
    PROMETHEUS_MULTIPROC_DIR: str = ""

    # Sessions, refresh tokens and password recovery (seconds).
    REFRESH_TOKEN_EXPIRATION_DELTA: int = Field(default=2592000, ge=60)
    PASSWORD_RESET_EXPIRATION: int = Field(default=3600, ge=60)
    PASSWORD_RESET_URL: str = "http://localhost:3000/reset-password?token={token}"
    SMTP_HOST: str = ""
    SMTP_PORT: int = Field(default=587, ge=1, le=65535)
    SMTP_USER: str = ""
    SMTP_PASSWORD: str = Field(default="", repr=False)
    SMTP_STARTTLS: bool = False
    SMTP_TIMEOUT: float = Field(default=10, gt=0)
    MAIL_FROM: str = "Todo API <no-reply@localhost>"

    # Abuse protection, in the `limits` notation ("5/minute", "50/hour").
    RATE_LIMIT_ENABLED: bool = True
    RATE_LIMIT_LOGIN: str = "10/minute"
    RATE_LIMIT_LOGIN_PER_EMAIL: str = "50/hour"
    RATE_LIMIT_REGISTER: str = "5/minute"
    RATE_LIMIT_TOKEN: str = "10/minute"
    RATE_LIMIT_REFRESH: str = "30/minute"
    RATE_LIMIT_FORGOT_PASSWORD: str = "5/minute"
    RATE_LIMIT_FORGOT_PASSWORD_PER_EMAIL: str = "3/hour"
    RATE_LIMIT_RESET_PASSWORD: str = "10/minute"
    # Calls to the MCP server (/mcp), per user.
    RATE_LIMIT_MCP: str = "600/minute"
    RATE_LIMIT_STORAGE_URL: str = Field(default="memory://", repr=False)
    RATE_LIMIT_KEY_PREFIX: str = "todo-api"
    TRUSTED_PROXIES: Annotated[list[str], NoDecode] = Field(default=[])

    # A Better Auth frontend's own tokens (see README "Using it with a Better Auth frontend").
    BETTER_AUTH_URL: str = ""
    BETTER_AUTH_JWKS_URL: str = ""
    BETTER_AUTH_ISSUER: Annotated[list[str], NoDecode] = Field(default_factory=list)
    BETTER_AUTH_AUDIENCE: Annotated[list[str], NoDecode] = Field(default_factory=list)
    BETTER_AUTH_ALGORITHMS: Annotated[list[str], NoDecode] = Field(default_factory=lambda: list(BETTER_AUTH_ALGORITHMS))
    BETTER_AUTH_JWKS_CACHE_SECONDS: int = Field(default=300, ge=1)
    BETTER_AUTH_SESSION_LOOKUP: bool = False
    BETTER_AUTH_DATABASE_URL: str = Field(default="", repr=False)
    BETTER_AUTH_REQUIRE_SIGNED_SESSION: bool = False

    # Live changes (GET /api/{user_id}/events, docs/api.md#live-changes): seconds, and streams per process.
    EVENT_RETENTION: int = Field(default=604800, ge=60)
    EVENT_HEARTBEAT_SECONDS: float = Field(default=15, gt=0)
    EVENT_AUTH_CHECK_SECONDS: float = Field(default=2, gt=0)
    EVENT_STREAMS_PER_USER: int = Field(default=10, ge=1)
    EVENT_STREAMS_MAX: int = Field(default=1000, ge=1)
    # Redis for fan-out between instances; "" (the default): RATE_LIMIT_STORAGE_URL when that is a Redis, else none.
    REDIS_URL: str = Field(default="", repr=False)

    # The Model Context Protocol server for AI agents (docs/agents.md).
    MCP_ENABLED: bool = True
    # Browser origins allowed to call /mcp besides CORS_ORIGINS (a request without Origin is not a browser's).
    MCP_ALLOWED_ORIGINS: Annotated[list[str], NoDecode] = Field(default=[])
    # Where an MCP client logs in (RFC 9728's authorization_servers); default: BETTER_AUTH_URL when set.
    MCP_AUTHORIZATION_SERVERS: Annotated[list[str], NoDecode] = Field(default=[])

    # Reminders (docs/api.md#reminders): the scheduler in every `serve` process (or `todo-api worker`). Seconds.
    REMINDERS_ENABLED: bool = True
    REMINDER_POLL_SECONDS: float = Field(default=10, gt=0)
    REMINDER_RETRY_SECONDS: float = Field(default=30, gt=0)
    REMINDER_MAX_ATTEMPTS: int = Field(default=8, ge=5, le=30)
    REMINDER_MAX_LATENESS: float = Field(default=86400, gt=0)
    REMINDER_BATCH_SIZE: int = Field(default=200, ge=1, le=5000)
    REMINDER_SEND_CONCURRENCY: int = Field(default=8, ge=1, le=64)
    # How long a claimed send stays claimed (an instance that died while sending: another sends it after this).
    REMINDER_CLAIM_SECONDS: float = Field(default=60, gt=0)
    # Web Push: the VAPID key pair's private key (PEM, or base64url of the raw key or DER) and the contact.
    VAPID_PRIVATE_KEY: str = Field(default="", repr=False)
    VAPID_SUBJECT: str = ""
    PUSH_TIMEOUT: float = Field(default=5, gt=0, le=60)
    PUSH_TTL: int = Field(default=86400, ge=0, le=2419200)  # how long a push service keeps a message for
    # Let push endpoints be http:// and private or loopback addresses (tests, local development; refused in
    # production).
    PUSH_ALLOW_PRIVATE_ENDPOINTS: bool = False

    @field_validator(
        "CORS_ORIGINS",
        "TRUSTED_PROXIES",
        "MCP_ALLOWED_ORIGINS",
        "MCP_AUTHORIZATION_SERVERS",
        "BETTER_AUTH_ISSUER",
        "BETTER_AUTH_AUDIENCE",
        "BETTER_AUTH_ALGORITHMS",
        mode="before",
    )
    @classmethod
    def _parse_lists(cls, value: Any) -> Any:
        return _split_csv(value)

    @field_validator("TRUSTED_PROXIES")
    @classmethod
    def _valid_networks(cls, value: list[str]) -> list[str]:
        for item in value:
            ipaddress.ip_network(item, strict=False)  # ValueError -> the setting is refused at start
        return value

    @field_validator(
        "RATE_LIMIT_LOGIN",
        "RATE_LIMIT_LOGIN_PER_EMAIL",
        "RATE_LIMIT_REGISTER",
        "RATE_LIMIT_TOKEN",
        "RATE_LIMIT_REFRESH",
        "RATE_LIMIT_FORGOT_PASSWORD",
        "RATE_LIMIT_FORGOT_PASSWORD_PER_EMAIL",
        "RATE_LIMIT_RESET_PASSWORD",
        "RATE_LIMIT_MCP",
    )
    @classmethod
    def _valid_limit(cls, value: str) -> str:
        from limits import parse_many

        parse_many(value)  # ValueError for anything that is not "N/period"
        return value

    @field_validator("PASSWORD_RESET_URL")
    @classmethod
    def _has_token_placeholder(cls, value: str) -> str:
        if "{token}" not in value:
            raise ValueError("PASSWORD_RESET_URL must contain a {token} placeholder")
        return value

    @field_validator("DATABASE_URL")
    @classmethod
    def _normalize_url(cls, value: str) -> str:
        return normalize_database_url(value)

    @field_validator("BETTER_AUTH_DATABASE_URL")
    @classmethod
    def _normalize_better_auth_db(cls, value: str) -> str:
        return normalize_database_url(value) if value.strip() else ""

    @field_validator("BETTER_AUTH_URL", "BETTER_AUTH_JWKS_URL")
    @classmethod
    def _check_http_url(cls, value: str, info: ValidationInfo) -> str:
        return _http_url(value, str(info.field_name))

    @field_validator("BETTER_AUTH_ALGORITHMS")
    @classmethod
    def _known_algorithms(cls, value: list[str]) -> list[str]:
        unknown = [alg for alg in value if alg not in BETTER_AUTH_ALGORITHMS]
        if unknown or not value:
            raise ValueError(f"BETTER_AUTH_ALGORITHMS must be some of {', '.join(BETTER_AUTH_ALGORITHMS)}")
        return value

    @field_validator("LOG_FORMAT", mode="before")
    @classmethod
    def _lower_case(cls, value: Any) -> Any:
        if isinstance(value, str):
            return value.strip().lower() or None  # LOG_FORMAT= (empty): the default
        return value

    @model_validator(mode="after")
    def _better_auth_defaults(self) -> Settings:
        """The JWKS URL, issuer and audience follow from BETTER_AUTH_URL unless given explicitly."""
        if self.BETTER_AUTH_URL:
            default_jwks_url = self.BETTER_AUTH_URL + BETTER_AUTH_JWKS_PATH
            self.BETTER_AUTH_JWKS_URL = self.BETTER_AUTH_JWKS_URL or default_jwks_url
            origin = _origin(self.BETTER_AUTH_URL)
            self.BETTER_AUTH_ISSUER = self.BETTER_AUTH_ISSUER or [origin]
            self.BETTER_AUTH_AUDIENCE = self.BETTER_AUTH_AUDIENCE or [origin]
        elif self.BETTER_AUTH_JWKS_URL and not (self.BETTER_AUTH_ISSUER and self.BETTER_AUTH_AUDIENCE):
            raise ValueError(
                "BETTER_AUTH_JWKS_URL without BETTER_AUTH_URL needs both BETTER_AUTH_ISSUER and BETTER_AUTH_AUDIENCE"
            )
        if self.BETTER_AUTH_DATABASE_URL == self.DATABASE_URL:
            self.BETTER_AUTH_DATABASE_URL = ""
        return self

    @field_validator("VAPID_SUBJECT")
    @classmethod
    def _vapid_subject(cls, value: str) -> str:
        value = value.strip()
        if value and not value.startswith(("mailto:", "https://")):
            raise ValueError("VAPID_SUBJECT must be a mailto: or https:// URL")
        return value

    @model_validator(mode="after")
    def _push_settings(self) -> Settings:
        self.VAPID_PRIVATE_KEY = self.VAPID_PRIVATE_KEY.strip()
        if self.VAPID_PRIVATE_KEY:
            from todo_api.reminders.push import load_vapid_key

            load_vapid_key(self.VAPID_PRIVATE_KEY)  # ValueError, saying nothing of the key -> refused at start
        if self.VAPID_PRIVATE_KEY and not self.VAPID_SUBJECT:
            raise ValueError("VAPID_PRIVATE_KEY needs VAPID_SUBJECT (a mailto: or https:// contact)")
        if self.PUSH_ALLOW_PRIVATE_ENDPOINTS and self.ENVIRONMENT.lower() == "production":
            raise ValueError("PUSH_ALLOW_PRIVATE_ENDPOINTS cannot be on when ENVIRONMENT=production")
        return self

    @property
    def push_enabled(self) -> bool:
        return bool(self.VAPID_PRIVATE_KEY)

    @model_validator(mode="after")
    def _check_secret(self) -> Settings:
        if self.is_development:
            if not self.BETTER_AUTH_SECRET:
                self.BETTER_AUTH_SECRET = _read_development_secret() or _process_secret()
        elif len(self.BETTER_AUTH_SECRET) < MIN_SECRET_LENGTH:
            raise ValueError(
                f"BETTER_AUTH_SECRET must be set to at least {MIN_SECRET_LENGTH} characters "
                f"when ENVIRONMENT={self.ENVIRONMENT}"
            )
        return self

    @property
    def docs_enabled(self) -> bool:
        if self.DOCS_ENABLED is not None:
            return self.DOCS_ENABLED
        return self.ENVIRONMENT.lower() != "production"

    @property
    def redis_url(self) -> str:
        if self.REDIS_URL:
            return self.REDIS_URL
        storage = self.RATE_LIMIT_STORAGE_URL
        return storage if storage.startswith(("redis://", "rediss://", "redis+unix://")) else ""

    @property
    def mcp_authorization_servers(self) -> list[str]:
        return self.MCP_AUTHORIZATION_SERVERS or ([self.BETTER_AUTH_URL] if self.BETTER_AUTH_URL else [])

    @property
    def log_format(self) -> Literal["console", "json"]:
        if self.LOG_FORMAT is not None:
            return self.LOG_FORMAT
        return "console" if self.is_development else "json"

    @property
    def password_hash_concurrency(self) -> int:
        if self.PASSWORD_HASH_CONCURRENCY:
            return self.PASSWORD_HASH_CONCURRENCY
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        return max(1, cores // self.WEB_CONCURRENCY)

    @property
    def behind_transaction_pooler(self) -> bool:
        if self.DB_TRANSACTION_POOLER is not None:
            return self.DB_TRANSACTION_POOLER
        return "-pooler" in (urlsplit(self.DATABASE_URL).hostname or "")

    @property
    def is_sqlite(self) -> bool:
        return self.DATABASE_URL.startswith("sqlite")


def _read_development_secret() -> str:
    """The secret in DEV_SECRET_FILE, or "" without a usable one (Settings only read the file; see
    create_development_secret)."""
    try:
        secret = DEV_SECRET_FILE.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return ""
    return secret if len(secret) >= MIN_SECRET_LENGTH else ""


def _process_secret() -> str:
    logger.warning(
        "BETTER_AUTH_SECRET is not set and %s holds none: tokens are signed with a random secret that ends with "
        "this process (`todo-api serve` and `todo-api migrate` create the file)",
        DEV_SECRET_FILE,
    )
    return secrets.token_urlsafe(48)


def create_development_secret() -> None:
    """In development without BETTER_AUTH_SECRET, create DEV_SECRET_FILE unless a usable one exists.

    `todo-api serve` and `migrate` call it before any Settings are built, so the server, each of its workers and its
    next start read the same secret (tokens survive a restart). Nothing else writes the file.
    """
    source = _SecretSettings()
    if not source.is_development or source.BETTER_AUTH_SECRET or _read_development_secret():
        return
    DEV_SECRET_FILE.unlink(missing_ok=True)  # an unusable one (empty, too short)
    # Owner-only from the moment it exists.
    descriptor = os.open(DEV_SECRET_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        file.write(secrets.token_urlsafe(48) + "\n")
    logger.warning("BETTER_AUTH_SECRET is not set: generated a development secret in %s", DEV_SECRET_FILE)


def export_to_workers(**values: str | int) -> None:
    """Hand settings that `todo-api serve` decides (WEB_CONCURRENCY, PROMETHEUS_MULTIPROC_DIR) to the worker processes
    it starts, which build their own Settings from the environment (as prometheus_client reads its folder there).

    The one place that writes the environment; this process's next `get_settings()` sees the values too.
    """
    for name, value in values.items():
        if name not in Settings.model_fields:
            raise ValueError(f"{name} is not a setting")
        os.environ[name] = str(value)
    get_settings.cache_clear()


@lru_cache
def get_settings() -> Settings:
    return Settings()


async def _app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(_app_settings)]
"""The settings the running app was built with (tests build apps with their own)."""
