"""Service settings: environment variables (``APP_`` prefix) and an optional ``.env`` file."""

import functools
from collections.abc import Sequence
from typing import Annotated, Literal, Self

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "APP_"
ENV_NESTED_DELIMITER = "__"

type Environment = Literal["development", "test", "production"]
type LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
type LogFormat = Literal["auto", "json", "console"]

# `postgres://` and `postgresql://` are what most hosting providers hand out;
# the service always talks to PostgreSQL through asyncpg.
_SCHEME_REWRITES = {"postgres": "postgresql+asyncpg", "postgresql": "postgresql+asyncpg"}
_SUPPORTED_SCHEMES = ("sqlite+aiosqlite", "postgresql+asyncpg")


def _upper(value: object) -> object:
    return value.upper() if isinstance(value, str) else value


class _Group(BaseModel):
    # A typo such as APP_DB__POOLSIZE fails loudly instead of being ignored.
    model_config = ConfigDict(extra="forbid", frozen=True)


class LogSettings(_Group):
    """Logging: ``APP_LOG__*``."""

    level: Annotated[LogLevel, BeforeValidator(_upper)] = Field(
        default="INFO", description="Lowest level written, for the service and its libraries."
    )
    format: LogFormat = Field(
        default="auto",
        description="json, console, or auto (console on a terminal, JSON otherwise).",
    )
    access: bool = Field(default=True, description="Write one request.completed line per request.")


class DatabaseSettings(_Group):
    """Database engine and pool: ``APP_DB__*``."""

    url: SecretStr = Field(
        default=SecretStr("sqlite+aiosqlite:///./app.db"),
        description="SQLAlchemy URL: sqlite+aiosqlite://... or postgresql+asyncpg://...",
    )
    pool_size: int = Field(default=5, ge=1, le=1000, description="Connections kept open.")
    max_overflow: int = Field(
        default=5, ge=0, le=1000, description="Extra connections allowed above pool_size."
    )
    pool_timeout: float = Field(
        default=5.0, gt=0, le=300, description="Seconds to wait for a free connection."
    )
    pool_recycle: int = Field(
        default=1800, gt=0, description="Seconds after which a connection is replaced."
    )
    pool_pre_ping: bool = Field(
        default=True, description="Check that a pooled connection is alive before using it."
    )
    pre_ping_idle: float = Field(
        default=0.0,
        ge=0,
        le=3600,
        description="With pool_pre_ping, ping only connections idle this many seconds (0: always).",
    )
    connect_timeout: float = Field(
        default=5.0, gt=0, le=300, description="Seconds allowed to open a connection."
    )
    statement_timeout: float = Field(
        default=30.0, ge=0, le=86400, description="Server-side limit per statement (0: none)."
    )
    pgbouncer: bool = Field(
        default=False,
        description="Behind PgBouncer in transaction mode: no pool, no prepared-statement cache.",
    )
    echo: bool = Field(default=False, description="Log every SQL statement (debugging only).")

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: SecretStr) -> SecretStr:
        # Messages here never include the URL: it usually carries a password.
        scheme, separator, rest = value.get_secret_value().partition("://")
        if not separator:
            raise ValueError("expected <scheme>://..., e.g. postgresql+asyncpg://user@host/db")
        scheme = _SCHEME_REWRITES.get(scheme.lower(), scheme.lower())
        if scheme not in _SUPPORTED_SCHEMES:
            raise ValueError(f"unsupported scheme; use one of {', '.join(_SUPPORTED_SCHEMES)}")
        return SecretStr(f"{scheme}://{rest}")


class HttpSettings(_Group):
    """The shared outbound HTTP client: ``APP_HTTP__*``."""

    connect_timeout: float = Field(default=5.0, gt=0, le=300, description="Seconds to connect.")
    read_timeout: float = Field(
        default=10.0, gt=0, le=3600, description="Seconds between received bytes."
    )
    write_timeout: float = Field(
        default=10.0, gt=0, le=3600, description="Seconds between sent bytes."
    )
    pool_timeout: float = Field(
        default=5.0, gt=0, le=300, description="Seconds to wait for a free connection."
    )
    max_connections: int = Field(default=100, ge=1, le=10000, description="Open connections.")
    max_keepalive: int = Field(default=20, ge=0, le=10000, description="Idle connections kept.")

    @model_validator(mode="after")
    def _keepalive_within_limit(self) -> Self:
        if self.max_keepalive > self.max_connections:
            raise ValueError("max_keepalive must not exceed max_connections")
        return self


class ServerSettings(_Group):
    """HTTP server lifecycle and request limits: ``APP_SERVER__*``."""

    drain_delay: float = Field(
        default=5.0,
        ge=0,
        le=300,
        description="Seconds to keep serving (with /readyz at 503) after SIGTERM.",
    )
    shutdown_timeout: float = Field(
        default=20.0,
        ge=0,
        le=3600,
        description="Seconds in-flight requests get to finish once the listener is closed.",
    )
    readiness_timeout: float = Field(
        default=2.0, gt=0, le=60, description="Seconds the /readyz database ping may take."
    )
    max_body_bytes: int = Field(
        default=1024 * 1024, ge=1, description="Largest request body accepted, in bytes."
    )


class Settings(BaseSettings):
    """Every setting of the service, read once at startup.

    Values come from, highest priority first: keyword arguments, environment
    variables, the ``.env`` file in the working directory, and the defaults here.
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_NESTED_DELIMITER,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
        # A rejected value may be a secret: keep it out of error messages.
        hide_input_in_errors=True,
    )

    environment: Environment = Field(
        default="development", description="development, test or production."
    )
    host: str = Field(default="127.0.0.1", min_length=1, description="Interface to listen on.")
    port: int = Field(default=8000, ge=0, le=65535, description="TCP port (0: any free port).")
    log: LogSettings = LogSettings()
    db: DatabaseSettings = DatabaseSettings()
    http: HttpSettings = HttpSettings()
    server: ServerSettings = ServerSettings()


@functools.cache
def get_settings() -> Settings:
    """Return the process-wide settings, reading the environment on first call.

    Returns:
        The validated settings.

    Raises:
        ValidationError: A variable is missing or invalid; see `describe_errors`.
    """
    return Settings()


def env_var_name(location: Sequence[int | str]) -> str:
    """Map a validation error location such as ``("db", "pool_size")`` to its variable.

    Args:
        location: The ``loc`` of one pydantic error.

    Returns:
        The environment variable name, e.g. ``APP_DB__POOL_SIZE``.
    """
    parts = [str(part).upper() for part in location if isinstance(part, str)]
    return ENV_PREFIX + ENV_NESTED_DELIMITER.join(parts)


def describe_errors(error: ValidationError) -> list[str]:
    """Turn a settings `ValidationError` into one readable line per bad variable.

    The offending values are never included: they may be secrets.

    Args:
        error: Raised by `Settings`.

    Returns:
        Lines such as ``APP_PORT: Input should be a valid integer``.
    """
    messages: dict[str, list[str]] = {}
    for item in error.errors(include_url=False, include_input=False, include_context=False):
        message = item["msg"].removeprefix("Value error, ")
        messages.setdefault(env_var_name(item["loc"]), []).append(message)
    return [f"{name}: {'; '.join(found)}" for name, found in messages.items()]
