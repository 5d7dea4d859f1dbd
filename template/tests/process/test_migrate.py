import sqlite3
import subprocess
from contextlib import closing
from pathlib import Path

import pytest

from tests.helpers import json_lines, process_env, python_module_argv
from tests.schema import script_heads

pytestmark = pytest.mark.slow  # each test starts `python -m app.migrate`


def _migrate(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 -- fixed argv, no shell
        [*python_module_argv("app.migrate"), *args],
        cwd=tmp_path,
        env=process_env(tmp_path, **env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _version(database: Path) -> list[str]:
    with closing(sqlite3.connect(database)) as connection:
        return [row[0] for row in connection.execute("SELECT version_num FROM alembic_version")]


def test_upgrade_head_migrates_the_configured_database(tmp_path: Path) -> None:
    """`python -m app.migrate upgrade head` uses APP_DB__URL and logs JSON lines to stderr."""
    completed = _migrate(tmp_path, "upgrade", "head")

    assert completed.returncode == 0, completed.stderr
    assert completed.stdout == ""
    events = [line["event"] for line in json_lines(completed.stderr)]
    assert any(event.startswith("Running upgrade  -> 0001") for event in events)
    assert tuple(_version(tmp_path / "test.db")) == script_heads()


def test_sql_mode_writes_only_sql_to_stdout(tmp_path: Path) -> None:
    """`upgrade head --sql` prints reviewable SQL, touches no database and keeps logs apart."""
    completed = _migrate(tmp_path, "upgrade", "head", "--sql")

    assert completed.returncode == 0, completed.stderr
    assert "INSERT INTO alembic_version (version_num) VALUES ('0001')" in completed.stdout
    assert '"event"' not in completed.stdout
    assert not (tmp_path / "test.db").exists()


def test_bad_config_exits_2_without_echoing_the_url(tmp_path: Path) -> None:
    """A bad APP_DB__URL stops the migration like it stops the service: status 2, one line."""
    completed = _migrate(
        tmp_path, "upgrade", "head", APP_DB__URL="mysql://root:canary-hunter2@db/x"
    )

    assert completed.returncode == 2
    assert completed.stderr.startswith("config error: APP_DB__URL: unsupported scheme")
    assert "canary-hunter2" not in completed.stdout + completed.stderr


def test_unreachable_database_exits_1_without_the_password(tmp_path: Path) -> None:
    """A database that refuses connections fails the migration with status 1 and a log line."""
    url = "postgresql+asyncpg://nobody:canary-hunter2@127.0.0.1:1/nothing"

    completed = _migrate(tmp_path, "upgrade", "head", APP_DB__URL=url)

    assert completed.returncode == 1
    [failure] = [line for line in json_lines(completed.stderr) if line["level"] == "error"]
    assert failure["event"] == "migrate.failed"
    assert failure["command"] == "upgrade"
    assert "canary-hunter2" not in completed.stdout + completed.stderr


def test_missing_command_is_a_usage_error(tmp_path: Path) -> None:
    """Without a command the CLI prints its usage and exits 2 before reading any setting."""
    completed = _migrate(tmp_path, APP_PORT="not-a-port")

    assert completed.returncode == 2
    assert "usage: python -m app.migrate" in completed.stderr
    assert "APP_PORT" not in completed.stderr
