"""Slow: each rendered project passes its own documented lock, lint, type and test commands."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import (
    PROJECT_CHECKS,
    Rendered,
    git,
    postgres_url,
    project_env,
    pytest_counts,
    run_checked,
    scratch_database,
)
from tests.pgbouncer import PgBouncer
from tests.server import free_port, serve_probe_stop

pytestmark = pytest.mark.slow


@pytest.fixture
def database(rendered_any: Rendered) -> Iterator[str]:
    """Create a fresh PostgreSQL database for one render's suite and drop it afterwards."""
    with scratch_database(f"keel_{rendered_any.combo.slug.replace('-', '_')}") as name:
        yield name


# The rendered suites' timing tests (the loop guard's) assume no other suite or load
# generator shares the machine's two CPUs: `.ci/run`'s `--dist loadgroup` runs everything
# in this group on one worker, one after the other (two suites at once failed them in CI).
@pytest.mark.xdist_group("saturates-cpus")
def test_generated_project_checks_pass(
    rendered_any: Rendered, database: str, pgbouncer: PgBouncer
) -> None:
    """Lock, sync, format, lint, types and every test (slow, PostgreSQL) pass; the tree stays clean.

    The suite's PgBouncer tests get the same database through a real PgBouncer.
    """
    cwd = rendered_any.path
    env = project_env(
        APP_TEST_DATABASE_URL=postgres_url(database),
        APP_TEST_PGBOUNCER_URL=pgbouncer.url(database),
        CI="true",
    )
    for command in PROJECT_CHECKS:
        run_checked(command, cwd=cwd, env=env)

    # Every tier, as the rendered CI runs it (tests/test_test_tiers.py checks that CI does).
    tests = run_checked(
        ["uv", "run", "pytest", "-p", "no:cacheprovider", "-m", "slow or not slow"],
        cwd=cwd,
        env=env,
    )

    counts = pytest_counts(tests.stdout)
    assert counts["passed"] > 0, tests.stdout
    assert (0, 0, 0) == (counts["failed"], counts["errors"], counts["skipped"]), tests.stdout
    assert 0 == counts.get("deselected", 0), tests.stdout
    assert "" == git(cwd, "status", "--porcelain")


def test_generated_project_serves_probes_and_stops_on_sigterm(
    rendered: Rendered, tmp_path: Path
) -> None:
    """`uv run python -m app` on SQLite answers /livez and /readyz, then exits 0 on SIGTERM."""
    cwd = rendered.path
    port = free_port()
    env = project_env(APP_PORT=str(port))
    run_checked(["uv", "sync", "--locked"], cwd=cwd, env=env)
    run = serve_probe_stop(
        ["uv", "run", "python", "-m", "app"], cwd=cwd, env=env, port=port, log=tmp_path / "log"
    )

    assert {"/livez": 200, "/readyz": 200} == run.statuses, run.output
    assert 0 == run.exit_code, run.output
