"""Secrets never reach the output: a full run of the service, every line captured.

The service runs as a real process at DEBUG with SQL echo on, with a password in its
database URL and every `SecretStr` setting given a recognisable value. It starts, serves
good and failing requests, hits database errors and outages, shuts down; then nothing it
wrote may contain a secret.
"""

import sys
from pathlib import Path

import httpx
import pytest
from pydantic import BaseModel, SecretStr
from sqlalchemy.engine import make_url

from app.core.config import ENV_NESTED_DELIMITER, ENV_PREFIX, Settings
from tests.helpers import ServerProcess, process_env, running_server, wait_until_ready

PASSWORD = "canary-Db-Pa55"  # noqa: S105 -- the secret the test looks for
SECRET_VALUE = "canary-secret-value"  # noqa: S105 -- given to any other SecretStr setting
LEAK_SERVER = [sys.executable, str(Path(__file__).with_name("leak_server.py"))]


def secret_variables(model: type[BaseModel], prefix: str = ENV_PREFIX) -> list[str]:
    """Return the environment variable of every `SecretStr` setting, at any depth."""
    names: list[str] = []
    for field_name, field in model.model_fields.items():
        annotation = field.annotation
        variable = f"{prefix}{field_name.upper()}"
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names += secret_variables(annotation, variable + ENV_NESTED_DELIMITER)
        elif annotation is SecretStr or SecretStr in getattr(annotation, "__args__", ()):
            names.append(variable)
    return names


def _environment(tmp_path: Path, database_url: str) -> dict[str, str]:
    url = make_url(database_url).set(password=PASSWORD).render_as_string(hide_password=False)
    secrets = dict.fromkeys(secret_variables(Settings), SECRET_VALUE)
    secrets["APP_DB__URL"] = url
    return process_env(
        tmp_path,
        **secrets,
        APP_LOG__LEVEL="DEBUG",
        APP_LOG__FORMAT="json",
        APP_DB__ECHO="true",
        APP_DB__STATEMENT_TIMEOUT="0.2",
        APP_SERVER__DRAIN_DELAY="0",
    )


def _exercise(server: ServerProcess) -> dict[str, int]:
    base = server.base_url
    statuses = {
        path: httpx.get(f"{base}{path}", timeout=10).status_code
        for path in (
            "/livez",
            "/readyz",
            "/leak/sleep?seconds=0",
            "/leak/sleep?seconds=1",
            "/leak/sql-error",
            "/leak/crash",
            "/leak/sleep?seconds=not-a-number",
            "/missing",
        )
    }
    statuses["exit"] = server.stop()
    return statuses


@pytest.mark.slow  # two real server processes
def test_no_secret_in_any_output_of_a_full_run(tmp_path: Path, database_url: str) -> None:
    """Start-up, requests, errors, an outage and shutdown: no password, no secret value."""
    env = _environment(tmp_path, database_url)
    assert make_url(env["APP_DB__URL"]).password == PASSWORD  # the URL really carries it

    with running_server(LEAK_SERVER, tmp_path, env) as server:
        wait_until_ready(server.base_url)
        statuses = _exercise(server)
        output = server.output()

    # The same with the database gone: connection errors must not quote the URL either.
    down_dir = tmp_path / "down"
    down_dir.mkdir()
    down_env = {**env, "APP_DB__URL": f"postgresql+asyncpg://svc:{PASSWORD}@127.0.0.1:1/gone"}
    with running_server(LEAK_SERVER, down_dir, down_env) as server:
        down_ready = httpx.get(f"{server.base_url}/readyz", timeout=10).status_code
        down_query = httpx.get(f"{server.base_url}/leak/sleep?seconds=0", timeout=10).status_code
        down_exit = server.stop()
        output += server.output()

    assert statuses == {
        "/livez": 200,
        "/readyz": 200,
        "/leak/sleep?seconds=0": 200,
        "/leak/sleep?seconds=1": 503,
        "/leak/sql-error": 500,
        "/leak/crash": 500,
        "/leak/sleep?seconds=not-a-number": 422,
        "/missing": 404,
        "exit": 0,
    }
    assert (down_ready, down_query, down_exit) == (503, 503, 0)
    # The failures were really logged, with their tracebacks, so the check below means something.
    for marker in ("request.failed", "division", "RuntimeError", "db.statement_timeout"):
        assert marker in output, marker
    assert "db.unavailable" in output
    assert "SELECT pg_sleep" in output  # SQL echo was on
    assert PASSWORD not in output
    assert SECRET_VALUE not in output
