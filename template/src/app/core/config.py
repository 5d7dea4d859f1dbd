"""Service settings: environment variables (``APP_`` prefix) and an optional ``.env`` file."""

import functools
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Literal, Self

# python-dotenv is the parser pydantic-settings reads .env files with (a required dependency of it).
from dotenv.parser import parse_stream
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
from pydantic_core import PydanticCustomError
from pydantic_settings import (
    BaseSettings,
    DotEnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

ENV_PREFIX = "APP_"
ENV_NESTED_DELIMITER = "__"

type Environment = Literal["development", "test", "production"]
type LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
type LogFormat = Literal["auto", "json", "console"]

# `postgres://` and `postgresql://` are what most hosting providers hand out;
# the service always talks to PostgreSQL through asyncpg.
_SCHEME_REWRITES = {"postgres": "postgresql+asyncpg", "postgresql": "postgresql+asyncpg"}
_SUPPORTED_SCHEMES = ("sqlite+aiosqlite", "postgresql+asyncpg")

# Error type of a setting that only some environments require; its context names the field.
_REQUIRED_IN_PRODUCTION = "required_in_production"

# The name a `.env` line sets: before "=", or any APP_ name that starts it. Never the value.
_DOTENV_NAME = re.compile(
    rf"\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_.]*\s*(?==)|{ENV_PREFIX}[A-Za-z0-9_]+)", re.IGNORECASE
)


class DotEnvError(SettingsError):
    """A ``.env`` file has lines that are not ``NAME=value``.

    python-dotenv only logs a warning and skips such a line, so a setting with an
    unclosed quote would silently fall back to its default. The service refuses instead.
    """

    def __init__(self, lines: list[str]) -> None:
        """Keep one readable line per bad ``.env`` line.

        Args:
            lines: Messages naming the file, the line number and the variable, if any.
        """
        super().__init__("\n".join(lines))
        self.lines = lines


def dotenv_errors(path: str | os.PathLike[str], encoding: str = "utf-8") -> list[str]:
    """Return one message per line of a ``.env`` file that python-dotenv cannot parse.

    Messages name the file, the line and the variable the line seems to set, never
    its value: a broken line is often a half-quoted password.

    Args:
        path: The file; a missing file has no errors.
        encoding: The file's encoding.

    Returns:
        Messages such as ``.env line 3 (APP_DB__URL): cannot be parsed ...``; empty when valid.
    """
    file = Path(path)
    if not file.is_file():
        return []
    errors: list[str] = []
    with file.open(encoding=encoding) as stream:
        for binding in parse_stream(stream):
            if binding.error:
                name = _DOTENV_NAME.match(binding.original.string)
                where = f"{file.name} line {binding.original.line}"
                if name:
                    where += f" ({name.group(1).strip()})"
                errors.append(
                    f"{where}: cannot be parsed; expected NAME=value "
                    "(check for an unclosed quote or a missing '=')"
                )
    return errors


def _check_dotenv_files(source: PydanticBaseSettingsSource) -> None:
    if not isinstance(source, DotEnvSettingsSource) or source.env_file is None:
        return
    files = source.env_file
    paths = [files] if isinstance(files, str | os.PathLike) else list(files)
    errors = [
        line for path in paths for line in dotenv_errors(path, source.env_file_encoding or "utf-8")
    ]
    if errors:
        raise DotEnvError(errors)


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
    pool_size: int = Field(default=10, ge=1, le=1000, description="Connections kept open.")
    max_overflow: int = Field(
        default=0,
        ge=0,
        le=1000,
        description="Extra connections above pool_size, each closed as soon as it is returned.",
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
        default=10.0,
        ge=0,
        le=3600,
        description="With pool_pre_ping, ping only connections idle this many seconds "
        "(0: every checkout); connections the server closed are always replaced.",
    )
    connect_timeout: float = Field(
        default=5.0, gt=0, le=300, description="Seconds allowed to open a connection."
    )
    statement_timeout: float = Field(
        default=30.0, ge=0, le=86400, description="Server-side limit per statement (0: none)."
    )
    pgbouncer: bool = Field(
        default=False,
        description="Behind PgBouncer 1.21+ (transaction mode): no statement_timeout at connect.",
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

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Use the default sources, but refuse a ``.env`` file with unparsable lines.

        Raises:
            DotEnvError: A line of the ``.env`` file is not ``NAME=value``.
        """
        _check_dotenv_files(dotenv_settings)
        return init_settings, env_settings, dotenv_settings, file_secret_settings

    @model_validator(mode="after")
    def _production_needs_database_url(self) -> Self:
        # The SQLite default suits a laptop; in production it would be a per-container
        # file that vanishes with the pod. Production must name its database.
        if self.environment == "production" and "url" not in self.db.model_fields_set:
            raise PydanticCustomError(
                _REQUIRED_IN_PRODUCTION,
                "must be set when APP_ENVIRONMENT=production (the SQLite default is for "
                "development only)",
                {"field": "db.url"},
            )
        return self


@functools.cache
def get_settings() -> Settings:
    """Return the process-wide settings, reading the environment on first call.

    Returns:
        The validated settings.

    Raises:
        ValidationError: A variable is missing or invalid; see `describe_errors`.
        DotEnvError: The ``.env`` file has a line that is not ``NAME=value``.
    """
    # Checked first so python-dotenv's own warning about the line is never printed too.
    env_file = Settings.model_config.get("env_file")
    if isinstance(env_file, str) and (errors := dotenv_errors(env_file)):
        raise DotEnvError(errors)
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
    for item in error.errors(include_url=False, include_input=False):
        message = item["msg"].removeprefix("Value error, ")
        location: Sequence[int | str] = item["loc"]
        if item["type"] == _REQUIRED_IN_PRODUCTION:
            location = str(item.get("ctx", {})["field"]).split(".")
        messages.setdefault(env_var_name(location), []).append(message)
    return [f"{name}: {'; '.join(found)}" for name, found in messages.items()]
