"""Bad configuration: ``python -m app`` exits 2 with one readable line and never a secret.

Every case carries a database password somewhere in its environment or ``.env``; the
output must name the variable and the problem, and nothing else.
"""

import subprocess
from pathlib import Path

import pytest

from tests.helpers import process_env, python_module_argv

pytestmark = pytest.mark.slow  # each case starts `python -m app`

PASSWORD = "canary-Pa55word"  # noqa: S105 -- the secret the test looks for
URL = f"postgresql+asyncpg://svc:{PASSWORD}@127.0.0.1:1/orders"

# (id, environment variables, .env file content or None, the one expected line)
CASES = [
    (
        "missing-url-in-production",
        # Hosting platforms often export DATABASE_URL; it is not ours and is never printed.
        {"APP_ENVIRONMENT": "production", "DATABASE_URL": URL},
        None,
        (
            "APP_DB__URL: must be set when APP_ENVIRONMENT=production "
            "(the SQLite default is for development only)"
        ),
    ),
    (
        "pool-size-not-an-integer",
        {"APP_DB__URL": URL, "APP_DB__POOL_SIZE": "ten"},
        None,
        "APP_DB__POOL_SIZE: Input should be a valid integer, unable to parse string as an integer",
    ),
    (
        "negative-timeout",
        {"APP_DB__URL": URL, "APP_DB__CONNECT_TIMEOUT": "-1"},
        None,
        "APP_DB__CONNECT_TIMEOUT: Input should be greater than 0",
    ),
    (
        "unknown-url-scheme",
        {"APP_DB__URL": f"mysql://svc:{PASSWORD}@db/orders"},
        None,
        "APP_DB__URL: unsupported scheme; use one of sqlite+aiosqlite, postgresql+asyncpg",
    ),
    (
        "drain-delay-out-of-range",
        {"APP_DB__URL": URL, "APP_SERVER__DRAIN_DELAY": "301"},
        None,
        "APP_SERVER__DRAIN_DELAY: Input should be less than or equal to 300",
    ),
    (
        "shutdown-timeout-negative",
        {"APP_DB__URL": URL, "APP_SERVER__SHUTDOWN_TIMEOUT": "-5"},
        None,
        "APP_SERVER__SHUTDOWN_TIMEOUT: Input should be greater than or equal to 0",
    ),
    (
        "dotenv-unclosed-quote",
        {},
        f'APP_PORT=8001\nAPP_DB__URL="{URL}\nAPP_LOG__LEVEL=INFO\n',
        (
            ".env line 2 (APP_DB__URL): cannot be parsed; expected NAME=value "
            "(check for an unclosed quote or a missing '=')"
        ),
    ),
    (
        "dotenv-missing-equals",
        {"APP_DB__URL": URL},
        f"# local settings\nAPP_DB__POOL_SIZE 5 {PASSWORD}\n",
        (
            ".env line 2 (APP_DB__POOL_SIZE): cannot be parsed; expected NAME=value "
            "(check for an unclosed quote or a missing '=')"
        ),
    ),
]


@pytest.mark.parametrize(
    ("variables", "dotenv", "expected"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_bad_config_exits_2_with_one_line_and_no_secret(
    tmp_path: Path, variables: dict[str, str], dotenv: str | None, expected: str
) -> None:
    """Exit code 2, exactly one line naming the variable and the problem, no traceback."""
    env = process_env(tmp_path, **variables)
    if "APP_DB__URL" not in variables:
        del env["APP_DB__URL"]  # the variable under test is the missing one, or comes from .env
    if dotenv is not None:
        (tmp_path / ".env").write_text(dotenv, encoding="utf-8")

    completed = subprocess.run(  # noqa: S603 -- fixed argv, no shell
        python_module_argv("app"),
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert completed.returncode == 2, completed.stderr
    assert completed.stdout == ""
    assert completed.stderr.splitlines() == [f"config error: {expected}"]
    assert PASSWORD not in completed.stderr
