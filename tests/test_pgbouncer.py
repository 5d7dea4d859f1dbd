"""Slow: the rendered PgBouncer tests fail where PgBouncer cannot carry the service's statements.

`test_generated.py` runs every rendered suite with a PgBouncer that tracks prepared
statements (``max_prepared_statements = 200``, the default since PgBouncer 1.24), where
they pass. Here the same tests meet a PgBouncer that does not (``0``, the default of 1.21
to 1.23 and what older releases do): the concurrency test must fail, naming the setting, which
shows the test can fail and why keel's docs ask for that setting.
"""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import (
    COMBOS,
    Rendered,
    postgres_url,
    project_env,
    psql,
    pytest_counts,
    run_checked,
    scratch_database,
)
from tests.pgbouncer import VERSION, pgbouncer_binary, running_pgbouncer, version_of
from tests.server import free_port

pytestmark = pytest.mark.slow

CONCURRENCY_TEST = "test_many_clients_run_statements_in_and_out_of_transactions"


@pytest.fixture
def project(combo_renders: Callable[..., Rendered]) -> Path:
    """A rendered project with the example, its environment synced."""
    rendered = combo_renders(COMBOS[0])
    run_checked(["uv", "sync", "--locked"], cwd=rendered.path, env=project_env())
    return rendered.path


def test_the_built_pgbouncer_is_the_pinned_release() -> None:
    """The cached build reports the version whose source hash the helper pins."""
    assert version_of(pgbouncer_binary()) == tuple(int(part) for part in VERSION.split("."))


def test_untracked_prepared_statements_fail_the_concurrency_test(
    project: Path,
) -> None:
    """With ``max_prepared_statements = 0`` the concurrency test fails, pinging or not; the rest pass."""
    with (
        scratch_database("keel_pgbouncer_control") as database,
        running_pgbouncer(max_prepared_statements=0, default_pool_size=2) as pgbouncer,
    ):
        result = subprocess.run(
            [
                *("uv", "run", "pytest", "-p", "no:cacheprovider", "-rf"),
                "tests/integration/test_pgbouncer.py",
            ],
            cwd=project,
            env=project_env(
                APP_TEST_DATABASE_URL=postgres_url(database),
                APP_TEST_PGBOUNCER_URL=pgbouncer.url(database),
            ),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )

    output = result.stdout + result.stderr
    counts = pytest_counts(result.stdout)
    assert result.returncode == 1, output
    assert (counts["failed"], counts["passed"], counts["skipped"]) == (2, 4, 0), output
    for variant in ("idle-ping", "ping-every-checkout"):
        assert (
            f"FAILED tests/integration/test_pgbouncer.py::{CONCURRENCY_TEST}[{variant}]" in output
        )
    assert "max_prepared_statements > 0" in output
    assert "does not exist" in output


# Run in the rendered project: fill the pool through PgBouncer, wait for a line on stdin
# (PgBouncer restarts meanwhile), then run 50 statements and report the failures.
_RESTART_PROBE = """
import asyncio, sys
from sqlalchemy import text
from app.core.config import Settings
from app.core.db import create_engine

async def main():
    engine = create_engine(Settings(db={"url": sys.argv[1], "pgbouncer": True}))

    async def one():
        async with engine.connect() as connection:
            return (await connection.execute(text("SELECT 1"))).scalar_one()

    await asyncio.gather(*(one() for _ in range(20)))
    print("pooled", engine.pool.checkedin(), flush=True)
    await asyncio.to_thread(sys.stdin.readline)
    results = await asyncio.gather(*(one() for _ in range(50)), return_exceptions=True)
    failed = [type(result).__name__ for result in results if isinstance(result, BaseException)]
    print("failed", len(failed), *failed, flush=True)
    await engine.dispose()

asyncio.run(main())
"""


@pytest.mark.parametrize(("pre_ping", "fails"), [("true", False), ("false", True)])
def test_pooled_connections_outlive_a_pgbouncer_restart(
    project: Path, pre_ping: str, *, fails: bool
) -> None:
    """PgBouncer restarts under a full pool: the checkout check replaces every closed connection.

    With the checks switched off (``APP_DB__POOL_PRE_PING=false``, the control) the first
    use of the stale pool fails, which shows the check is what saves the requests.
    """
    port = free_port()
    with scratch_database("keel_pgbouncer_restart") as database:
        with running_pgbouncer(port=port) as pgbouncer:
            probe = subprocess.Popen(
                ["uv", "run", "python", "-c", _RESTART_PROBE, pgbouncer.url(database)],
                cwd=project,
                env=project_env(APP_DB__POOL_PRE_PING=pre_ping),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            assert probe.stdout is not None
            pooled = probe.stdout.readline()
        with running_pgbouncer(port=port):
            output, errors = probe.communicate("go\n", timeout=60)

    word, count = pooled.split() or ("nothing", "0")
    assert word == "pooled", pooled + errors
    assert int(count) >= 2, pooled
    failed = output.split()
    assert failed[0] == "failed", output + errors
    assert (int(failed[1]) > 0) is fails, output


# Run in the rendered project as the role: one statement that outlasts the role's limit.
_ROLE_TIMEOUT_PROBE = """
import asyncio, sys, time
from sqlalchemy import exc, text
from app.core.config import Settings
from app.core.db import create_engine

async def main():
    # No driver-side limit: only the server's, from the role, can stop the statement.
    settings = Settings(db={"url": sys.argv[1], "pgbouncer": True, "statement_timeout": 0})
    engine = create_engine(settings)
    started = time.monotonic()
    try:
        async with engine.connect() as connection:
            limit = (await connection.execute(text("SHOW statement_timeout"))).scalar_one()
            await connection.execute(text("SELECT pg_sleep(5)"))
        outcome = "finished"
    except exc.DBAPIError as error:
        outcome = getattr(error.orig, "sqlstate", None) or type(error.orig).__name__
    print(limit, outcome, round(time.monotonic() - started, 2), flush=True)
    await engine.dispose()

asyncio.run(main())
"""


def test_a_statement_timeout_set_on_the_role_holds_through_pgbouncer(
    project: Path,
) -> None:
    """The docs' limit behind PgBouncer, ``ALTER ROLE ... SET statement_timeout``, stops a query.

    PgBouncer refuses the startup parameter, so this is the server-side limit a service
    behind it gets. The role logs in through PgBouncer and the server cancels the statement
    with SQLSTATE 57014, which the service answers as ``503 timeout``.
    """
    role = f"keel_pgbouncer_{secrets.token_hex(4)}"
    psql(f'CREATE ROLE "{role}" LOGIN')
    try:
        psql(f"ALTER ROLE \"{role}\" SET statement_timeout = '300ms'")
        with (
            scratch_database("keel_pgbouncer_role") as database,
            running_pgbouncer(users=(role,)) as pgbouncer,
        ):
            url = pgbouncer.url(database, user=role)
            probe = run_checked(
                ["uv", "run", "python", "-c", _ROLE_TIMEOUT_PROBE, url],
                cwd=project,
                env=project_env(),
                timeout=120,
            )
    finally:
        psql(f'DROP ROLE IF EXISTS "{role}"')

    limit, outcome, seconds = probe.stdout.split()
    assert (limit, outcome) == ("300ms", "57014"), probe.stdout
    assert float(seconds) < 3, probe.stdout
