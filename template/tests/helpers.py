"""Test helpers: settings without the environment, and the service run as a real process."""

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
from pydantic import BaseModel
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from app.core.config import Settings

STARTUP_TIMEOUT = 30.0
"""Seconds a server subprocess gets to print its listening address (imports are slow on CI)."""

_LISTENING = re.compile(r"Uvicorn running on http://([\d.]+):(\d+)")


class IsolatedSettings(Settings):
    """Settings built from keyword arguments only: no environment variables, no .env file."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Read keyword arguments only."""
        return (init_settings,)


def setting_env_names(model: type[BaseModel] = Settings, prefix: str = "APP_") -> set[str]:
    """Return every environment variable the settings read (``APP_DB__POOL_SIZE``, ...)."""
    names: set[str] = set()
    for field_name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names |= setting_env_names(annotation, f"{prefix}{field_name.upper()}__")
        else:
            names.add(f"{prefix}{field_name.upper()}")
    return names


def sqlite_url(directory: Path) -> str:
    """Return an aiosqlite URL for a database file inside ``directory``."""
    return f"sqlite+aiosqlite:///{directory / 'test.db'}"


def unreachable_postgres_url() -> str:
    """Return a PostgreSQL URL whose port refuses connections (port 1 is never served)."""
    return "postgresql+asyncpg://nobody:canary-password@127.0.0.1:1/nothing"


def _merge(base: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def build_settings(directory: Path, **overrides: Any) -> Settings:
    """Build test settings: SQLite in ``directory``, JSON logs, nested ``overrides`` merged in."""
    base: dict[str, Any] = {
        "environment": "test",
        "db": {"url": sqlite_url(directory)},
        "log": {"format": "json"},
        "server": {"drain_delay": 0.0, "shutdown_timeout": 5.0},
    }
    return IsolatedSettings(**_merge(base, overrides))


def process_env(directory: Path, **variables: str) -> dict[str, str]:
    """Return a minimal environment for running the service in a subprocess.

    Nothing is inherited but ``PATH``, so a developer's own ``APP_*`` variables cannot
    change the outcome; the database is a SQLite file inside ``directory``.
    """
    env = {
        "PATH": os.environ.get("PATH", ""),
        "APP_DB__URL": sqlite_url(directory),
        "APP_PORT": "0",
        "APP_ENVIRONMENT": "test",
    }
    env.update(variables)
    return env


def json_lines(text: str) -> list[dict[str, Any]]:
    """Parse every non-empty line of ``text`` as one JSON object (fails on any other line)."""
    parsed: list[dict[str, Any]] = []
    for line in text.splitlines():
        if line.strip():
            item = orjson.loads(line)
            assert isinstance(item, dict), line
            parsed.append(item)
    return parsed


@dataclass
class ServerProcess:
    """A service process started by `running_server`."""

    process: subprocess.Popen[bytes]
    log_path: Path
    base_url: str

    def output(self) -> str:
        """Return everything the process wrote to stdout and stderr so far."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self, timeout: float = 30.0) -> int:
        """Send SIGTERM and wait for the exit status."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)


def _wait_for_address(process: subprocess.Popen[bytes], log_path: Path) -> str:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        found = _LISTENING.search(log_path.read_text(encoding="utf-8", errors="replace"))
        if found:
            return f"http://{found.group(1)}:{found.group(2)}"
        if process.poll() is not None:
            break
        time.sleep(0.05)
    raise AssertionError(f"server did not start:\n{log_path.read_text(encoding='utf-8')}")


@contextmanager
def running_server(argv: list[str], cwd: Path, env: Mapping[str, str]) -> Iterator[ServerProcess]:
    """Start ``argv`` (a service process on port 0) and yield it once it listens.

    Output goes to a file, never an unread pipe: a full pipe blocks the server's logging
    and looks like a hang. The process is killed if the test leaves it running.
    """
    log_path = cwd / "server.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(  # noqa: S603 -- a fixed argument list, no shell
            argv, cwd=cwd, env=dict(env), stdout=log_file, stderr=subprocess.STDOUT
        )
    try:
        yield ServerProcess(process, log_path, _wait_for_address(process, log_path))
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def wait_until_ready(base_url: str, timeout: float = 10.0) -> None:
    """Poll ``/readyz`` until it answers 200."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if httpx.get(f"{base_url}/readyz", timeout=2.0).status_code == 200:
            return
        time.sleep(0.05)
    raise AssertionError("service never became ready")


# The service plus test-only routes (``/slow``, ``/slow-stream``, ``/echo``, ``/big``).
SLOW_SERVER = [sys.executable, str(Path(__file__).parent / "process" / "slow_server.py")]


def python_module_argv(module: str) -> list[str]:
    """Return the argv that runs ``module`` with this interpreter, as ``python -m``."""
    return [sys.executable, "-m", module]
