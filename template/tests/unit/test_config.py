import os
from pathlib import Path

import pytest
from pydantic import BaseModel, SecretStr, ValidationError
from pydantic_settings import DotEnvSettingsSource

from app.core.config import (
    DatabaseSettings,
    HttpSettings,
    Settings,
    describe_errors,
    env_var_name,
    get_settings,
)

ENV_EXAMPLE = Path(__file__).parents[2] / ".env.example"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Drop APP_* variables from the developer's shell and leave no .env in reach."""
    for name in list(os.environ):
        if name.upper().startswith("APP_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def _env_var_names(model: type[BaseModel], prefix: str = "APP_") -> set[str]:
    names: set[str] = set()
    for field_name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names |= _env_var_names(annotation, f"{prefix}{field_name.upper()}__")
        else:
            names.add(f"{prefix}{field_name.upper()}")
    return names


def test_settings_defaults() -> None:
    """Without any variable the documented defaults apply."""
    settings = Settings(_env_file=None)

    assert settings.environment == "development"
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)
    assert settings.db.url.get_secret_value() == "sqlite+aiosqlite:///./app.db"
    assert (settings.db.pool_size, settings.db.max_overflow) == (5, 5)
    assert settings.server.max_body_bytes == 1024 * 1024


def test_settings_read_prefixed_and_nested_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """APP_ variables fill top-level fields and `__` reaches into groups."""
    monkeypatch.setenv("APP_PORT", "9001")
    monkeypatch.setenv("APP_DB__POOL_SIZE", "12")
    monkeypatch.setenv("APP_LOG__LEVEL", "debug")
    monkeypatch.setenv("APP_SERVER__DRAIN_DELAY", "0")

    settings = Settings(_env_file=None)

    assert settings.port == 9001
    assert settings.db.pool_size == 12
    assert settings.log.level == "DEBUG"
    assert settings.server.drain_delay == 0.0


def test_settings_read_dotenv_file(tmp_path: Path) -> None:
    """A .env file is read, with the same names as the environment."""
    env_file = tmp_path / "custom.env"
    env_file.write_text("APP_PORT=7000\nAPP_DB__MAX_OVERFLOW=0\nOTHER_TOOL=ignored\n")

    settings = Settings(_env_file=env_file)

    assert settings.port == 7000
    assert settings.db.max_overflow == 0


def test_settings_env_beats_dotenv(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A real environment variable overrides the same name in .env."""
    (tmp_path / ".env").write_text("APP_PORT=7000\n")
    monkeypatch.setenv("APP_PORT", "7001")

    settings = Settings()

    assert settings.port == 7001


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgres://u:p@db/x", "postgresql+asyncpg://u:p@db/x"),
        ("postgresql://u:p@db/x", "postgresql+asyncpg://u:p@db/x"),
        ("postgresql+asyncpg://u:p@db/x", "postgresql+asyncpg://u:p@db/x"),
        ("sqlite+aiosqlite:///data/app.db", "sqlite+aiosqlite:///data/app.db"),
    ],
    ids=["postgres", "postgresql", "asyncpg", "sqlite"],
)
def test_db_url_scheme_normalised(given: str, expected: str) -> None:
    """Plain PostgreSQL URLs are switched to asyncpg; supported ones pass unchanged."""
    db = DatabaseSettings(url=SecretStr(given))

    assert expected == db.url.get_secret_value()


@pytest.mark.parametrize(
    "url",
    ["mysql://root:canary-pw@db/x", "postgresql+psycopg://u:canary-pw@db/x", "canary-pw"],
    ids=["mysql", "psycopg", "no-scheme"],
)
def test_db_url_unsupported_scheme_rejected_without_echo(url: str) -> None:
    """An unsupported URL is refused and the error never repeats it."""
    with pytest.raises(ValidationError) as caught:
        DatabaseSettings(url=SecretStr(url))

    assert "canary-pw" not in str(caught.value)
    assert "canary-pw" not in "\n".join(describe_errors(caught.value))


def test_db_url_is_secret_in_repr_and_json() -> None:
    """The URL's password never shows in repr or JSON dumps."""
    db = DatabaseSettings(url=SecretStr("postgresql://u:canary-pw@db/x"))
    settings = Settings(_env_file=None, db=db)

    assert "canary-pw" not in repr(settings)
    assert "canary-pw" not in settings.model_dump_json()


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("APP_DB__POOL_TIMEOUT", "-1"),
        ("APP_DB__STATEMENT_TIMEOUT", "-0.5"),
        ("APP_DB__POOL_SIZE", "0"),
        ("APP_HTTP__READ_TIMEOUT", "0"),
        ("APP_SERVER__DRAIN_DELAY", "301"),
        ("APP_SERVER__SHUTDOWN_TIMEOUT", "-1"),
        ("APP_PORT", "70000"),
        ("APP_LOG__FORMAT", "xml"),
        ("APP_ENVIRONMENT", "staging"),
    ],
)
def test_settings_reject_out_of_range(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    """Negative timeouts and other out-of-range values name their variable."""
    monkeypatch.setenv(variable, value)

    with pytest.raises(ValidationError) as caught:
        Settings(_env_file=None)

    assert [variable] == [line.split(":")[0] for line in describe_errors(caught.value)]


def test_http_keepalive_cannot_exceed_connections() -> None:
    """More idle keep-alive connections than connections is a configuration error."""
    with pytest.raises(ValidationError, match="max_keepalive"):
        HttpSettings(max_connections=2, max_keepalive=3)


def test_nested_typo_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """A misspelt variable inside a group fails instead of being silently ignored."""
    monkeypatch.setenv("APP_DB__POOLSIZE", "3")

    with pytest.raises(ValidationError) as caught:
        Settings(_env_file=None)

    assert describe_errors(caught.value) == ["APP_DB__POOLSIZE: Extra inputs are not permitted"]


def test_describe_errors_one_line_per_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each bad variable gets exactly one line naming it, with pydantic's reason."""
    monkeypatch.setenv("APP_DB__POOL_SIZE", "many")
    monkeypatch.setenv("APP_PORT", "-5")

    with pytest.raises(ValidationError) as caught:
        Settings(_env_file=None)

    assert describe_errors(caught.value) == [
        "APP_PORT: Input should be greater than or equal to 0",
        "APP_DB__POOL_SIZE: Input should be a valid integer, unable to parse string as an integer",
    ]


def test_env_var_name_skips_non_string_parts() -> None:
    """List indexes in an error location do not leak into the variable name."""
    assert env_var_name(("db", 0, "url")) == "APP_DB__URL"


def test_get_settings_is_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    """get_settings reads the environment once and then returns the same object."""
    get_settings.cache_clear()
    monkeypatch.setenv("APP_PORT", "8123")
    first = get_settings()
    monkeypatch.setenv("APP_PORT", "8124")

    second = get_settings()
    get_settings.cache_clear()

    assert first is second
    assert second.port == 8123


def test_env_example_lists_every_setting() -> None:
    """.env.example names every variable Settings reads, and nothing else."""
    documented = set(DotEnvSettingsSource(Settings, env_file=ENV_EXAMPLE).env_vars)

    assert {name.lower() for name in _env_var_names(Settings)} == documented


def test_env_example_values_are_valid_defaults() -> None:
    """The example file parses and equals the built-in defaults."""
    from_example = Settings(_env_file=ENV_EXAMPLE)

    defaults = Settings(_env_file=None)

    assert defaults.model_dump_json() == from_example.model_dump_json()
    assert defaults.db.url.get_secret_value() == from_example.db.url.get_secret_value()
