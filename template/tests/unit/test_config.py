import os
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError
from pydantic_settings import DotEnvSettingsSource

from app.core.config import (
    DatabaseSettings,
    DotEnvError,
    HttpSettings,
    Settings,
    describe_errors,
    dotenv_errors,
    env_var_name,
    get_settings,
)
from tests.helpers import setting_env_names

ENV_EXAMPLE = Path(__file__).parents[2] / ".env.example"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Drop APP_* variables from the developer's shell and leave no .env in reach."""
    for name in list(os.environ):
        if name.upper().startswith("APP_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def test_settings_defaults() -> None:
    """Without any variable the documented defaults apply."""
    settings = Settings(_env_file=None)

    assert settings.environment == "development"
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)
    assert settings.db.url.get_secret_value() == "sqlite+aiosqlite:///./app.db"
    assert (settings.db.pool_size, settings.db.max_overflow) == (10, 0)
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

    assert {name.lower() for name in setting_env_names()} == documented


def test_env_example_values_are_valid_defaults() -> None:
    """The example file parses and equals the built-in defaults."""
    from_example = Settings(_env_file=ENV_EXAMPLE)

    defaults = Settings(_env_file=None)

    assert defaults.model_dump_json() == from_example.model_dump_json()
    assert defaults.db.url.get_secret_value() == from_example.db.url.get_secret_value()


def test_production_requires_an_explicit_database_url(monkeypatch: pytest.MonkeyPatch) -> None:
    """APP_ENVIRONMENT=production without APP_DB__URL fails, naming APP_DB__URL."""
    monkeypatch.setenv("APP_ENVIRONMENT", "production")
    monkeypatch.setenv("APP_DB__POOL_SIZE", "3")  # another db variable does not count

    with pytest.raises(ValidationError) as caught:
        Settings(_env_file=None)

    assert describe_errors(caught.value) == [
        (
            "APP_DB__URL: must be set when APP_ENVIRONMENT=production "
            "(the SQLite default is for development only)"
        )
    ]


@pytest.mark.parametrize(
    "url", ["postgresql+asyncpg://svc@db/orders", "sqlite+aiosqlite:///data/app.db"]
)
def test_production_accepts_any_explicit_database_url(
    monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    """An explicit URL, even SQLite, is a deliberate choice and is accepted."""
    monkeypatch.setenv("APP_ENVIRONMENT", "production")
    monkeypatch.setenv("APP_DB__URL", url)

    assert Settings(_env_file=None).db.url.get_secret_value() == url


def test_malformed_dotenv_line_is_an_error(tmp_path: Path) -> None:
    """python-dotenv only warns about a bad line; the settings refuse the file instead."""
    env_file = tmp_path / "service.env"
    env_file.write_text(
        'APP_PORT=7000\nAPP_DB__URL="postgresql://u:canary-pw@db/x\nnot an assignment\n'
    )

    with pytest.raises(DotEnvError) as caught:
        Settings(_env_file=env_file)

    assert caught.value.lines == [
        (
            "service.env line 2 (APP_DB__URL): cannot be parsed; expected NAME=value "
            "(check for an unclosed quote or a missing '=')"
        ),
        (
            "service.env line 3: cannot be parsed; expected NAME=value "
            "(check for an unclosed quote or a missing '=')"
        ),
    ]
    assert "canary-pw" not in str(caught.value)


def test_dotenv_errors_accepts_valid_files(tmp_path: Path) -> None:
    """Comments, blank lines, export, quotes and a missing file are all fine."""
    env_file = tmp_path / ".env"
    env_file.write_text("# comment\n\nexport APP_PORT=1\nAPP_HOST=\"0.0.0.0\"\nAPP_X='a b'\n")

    assert dotenv_errors(env_file) == []
    assert dotenv_errors(tmp_path / "absent.env") == []


def test_dotenv_error_names_unknown_line_by_number_only(tmp_path: Path) -> None:
    """A line that names no variable is reported by file and line, without its text."""
    env_file = tmp_path / ".env"
    env_file.write_text("APP_PORT=1\nhunter2 is the password\n")

    assert dotenv_errors(env_file) == [
        (
            ".env line 2: cannot be parsed; expected NAME=value "
            "(check for an unclosed quote or a missing '=')"
        )
    ]


def test_get_settings_refuses_malformed_dotenv(tmp_path: Path) -> None:
    """get_settings checks ./.env before reading it (the working directory is tmp_path)."""
    (tmp_path / ".env").write_text("APP_PORT 8000\n")
    get_settings.cache_clear()

    with pytest.raises(DotEnvError, match=r"\.env line 1 \(APP_PORT\)"):
        get_settings()
    get_settings.cache_clear()


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("APP_DB__POOL_SIZE", "canary-42"),
        ("APP_PORT", "canary-port"),
        ("APP_LOG__LEVEL", "canary-level"),
        ("APP_SERVER__DRAIN_DELAY", "canary-delay"),
    ],
)
def test_validation_errors_never_echo_the_value(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    """hide_input_in_errors: pydantic's own message (what a traceback prints) omits the value.

    ``errors()`` still carries ``input`` on request; `describe_errors` never asks for it.
    """
    monkeypatch.setenv(variable, value)

    with pytest.raises(ValidationError) as caught:
        Settings(_env_file=None)

    assert "canary" not in str(caught.value).lower()  # the level is upper-cased first
    assert "canary" not in "\n".join(describe_errors(caught.value)).lower()
