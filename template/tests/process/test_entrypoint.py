import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from app.core.meta import service_name
from tests.helpers import (
    json_lines,
    process_env,
    python_module_argv,
    running_server,
    wait_until_ready,
)

pytestmark = pytest.mark.slow  # each test starts the service as a real process


def _run(argv: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 -- fixed argv, no shell
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_bad_config_exits_2_with_one_line_per_variable(tmp_path: Path) -> None:
    """Invalid settings end the process with status 2, one readable line per variable."""
    env = process_env(
        tmp_path,
        APP_DB__URL="mysql://root:canary-hunter2@db/x",
        APP_DB__POOL_SIZE="lots",
        APP_LOG__FORMAT="xml",
    )

    completed = _run(python_module_argv("app"), env, tmp_path)

    assert completed.returncode == 2
    assert completed.stdout == ""
    assert completed.stderr.splitlines() == [
        "config error: APP_LOG__FORMAT: Input should be 'auto', 'json' or 'console'",
        (
            "config error: APP_DB__URL: unsupported scheme; use one of sqlite+aiosqlite, "
            "postgresql+asyncpg"
        ),
        (
            "config error: APP_DB__POOL_SIZE: Input should be a valid integer, "
            "unable to parse string as an integer"
        ),
    ]
    assert "Traceback" not in completed.stderr
    assert "canary-hunter2" not in completed.stderr


def test_console_script_runs_main(tmp_path: Path) -> None:
    """The console script named after the project starts the same entry point."""
    script = Path(sys.executable).with_name(service_name())
    env = process_env(tmp_path, APP_PORT="not-a-port")

    completed = _run([str(script)], env, tmp_path)

    assert completed.returncode == 2
    assert completed.stderr.startswith("config error: APP_PORT:")


def test_server_serves_and_logs_only_json(tmp_path: Path) -> None:
    """`python -m app` serves the probes on SQLite; every output line, uvicorn's too, is JSON."""
    env = process_env(tmp_path, APP_SERVER__DRAIN_DELAY="0")

    with running_server(python_module_argv("app"), tmp_path, env) as server:
        wait_until_ready(server.base_url)
        live = httpx.get(f"{server.base_url}/livez", headers={"x-request-id": "e2e-1"})
        missing = httpx.get(f"{server.base_url}/missing")
        status = server.stop()
        lines = json_lines(server.output())

    events = [line["event"] for line in lines]
    assert status == 0
    assert (live.status_code, missing.status_code) == (200, 404)
    assert all({"timestamp", "level", "event"} <= line.keys() for line in lines)
    assert any(event.startswith("Uvicorn running on http://127.0.0.1:") for event in events)
    assert "Application startup complete." in events
    assert events.index("app.started") < events.index("app.stopped")
    assert {"request_id": "e2e-1", "status": 200, "path": "/livez"}.items() <= next(
        line for line in lines if line.get("request_id") == "e2e-1"
    ).items()
