"""Shared constants and subprocess helpers for the template's own tests."""

from __future__ import annotations

import os
import re
import secrets
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from copier import run_update

ROOT = Path(__file__).resolve().parent.parent
COPIER_YML = ROOT / "copier.yml"
Render = Callable[..., Path]
"""Render the working-tree template into a destination: ``render(dst, **answers) -> dst``."""

GIT_IDENTITY = (
    "-c",
    "user.name=keel tests",
    "-c",
    "user.email=tests@keel.invalid",
    "-c",
    "commit.gpgsign=false",
    "-c",
    "init.defaultBranch=main",
)


@dataclass(frozen=True)
class Combo:
    """One answer combination of copier.yml that the session renders once."""

    slug: str
    python: str
    name: str
    description: str
    example: bool = True
    """With False the session renders the example, then drops it with `copier update`."""

    @property
    def id(self) -> str:
        """Return a readable pytest id."""
        return f"{self.slug}-py{self.python}"

    @property
    def answers(self) -> dict[str, str | bool]:
        """Return every answer, spelled out so tests can look for each one in the output."""
        return {
            "project_name": self.name,
            "project_slug": self.slug,
            "description": self.description,
            "author_name": f"{self.name} Team",
            "author_email": f"{self.slug}@example.org",
            "python_version": self.python,
            "example": self.example,
        }


# The slugs sort before and after every locked package, so both ends of the lock are exercised.
# Everything that depends on the answers (Dockerfile, runtime contract, shutdown) runs on these.
COMBOS = (
    Combo("aardvark-api", "3.13", "Aardvark API", "Tracks burrows & tunnels for the colony"),
    Combo(
        "zulu-svc",
        "3.12",
        "Zulu Svc",
        "Last in line; sorts after every locked package",
        example=False,
    ),
)
# The rest of python_version x example: each renders and runs its own full suite only.
SUITE_ONLY_COMBOS = (
    Combo("kite-svc", "3.12", "Kite Svc", "Sits among the locked packages", example=True),
    Combo("mole-api", "3.13", "Mole API", "Digs without the example", example=False),
)
ALL_COMBOS = COMBOS + SUITE_ONLY_COMBOS


EXAMPLE_FILES = frozenset(
    {
        "src/app/ledger/__init__.py",
        "src/app/ledger/routes.py",
        "src/app/ledger/schemas.py",
        "src/app/ledger/service.py",
        "src/app/models/ledger.py",
        "src/app/migrations/versions/0002_ledger.py",
        "tests/fuzz.py",
        "tests/ledger.py",
        "tests/api/test_ledger.py",
        "tests/api/test_ledger_read.py",
        "tests/api/test_ledger_schema.py",
        "tests/unit/test_ledger.py",
        "tests/integration/test_ledger_pgbouncer.py",
        "tests/integration/test_ledger_postgres.py",
        "tests/integration/test_ledger_read_postgres.py",
    }
)
"""Every file the `example` question adds to a rendered project (POSIX paths)."""


@dataclass(frozen=True)
class Rendered:
    """A rendered project committed to its own git repository."""

    path: Path
    combo: Combo
    files: tuple[str, ...]
    """What copier wrote, listed before any tool ran in the project (POSIX paths, sorted)."""


def list_files(project: Path) -> tuple[str, ...]:
    """Return every file under `project` as sorted POSIX paths, leaving out `.git`."""
    return tuple(
        sorted(
            path.relative_to(project).as_posix()
            for path in project.rglob("*")
            if path.is_file() and ".git" not in path.relative_to(project).parts
        )
    )


def load_copier_yml() -> dict[str, Any]:
    """Return copier.yml as a mapping."""
    data: dict[str, Any] = yaml.safe_load(COPIER_YML.read_text())
    return data


def questions() -> dict[str, dict[str, Any]]:
    """Return the copier.yml questions (every key that is not a `_setting`), in file order."""
    return {key: value for key, value in load_copier_yml().items() if not key.startswith("_")}


def drop_example(project: Path) -> None:
    """Re-answer `example=false` in a committed project, as a user would with `copier update`."""
    run_update(
        str(project),
        data={"example": False},
        defaults=True,
        overwrite=True,
        vcs_ref="HEAD",
        unsafe=False,
        quiet=True,
    )


def git(cwd: Path, *args: str) -> str:
    """Run git with a fixed identity, so commits work on machines with no git config."""
    return run_checked(["git", *GIT_IDENTITY, *args], cwd=cwd).stdout


def commit_all(repo: Path, message: str, *, init: bool = False) -> None:
    """Commit every file in ``repo``, making it a git repository first when ``init`` is set."""
    if init:
        git(repo, "init", "--quiet")
    git(repo, "add", "--all")
    git(repo, "commit", "--quiet", "--message", message)


def project_env(**extra: str) -> dict[str, str]:
    """Return the environment for a rendered project: no outer venv, APP_ or PYTEST_ variables.

    `CI` is dropped too: it makes the rendered suite demand PostgreSQL, so a test opts in to that
    explicitly (`project_env(CI="true", ...)`) instead of inheriting it from the outer CI run.
    """
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"VIRTUAL_ENV", "CI"} and not key.startswith(("APP_", "PYTEST_"))
    }
    env.setdefault("UV_PYTHON_DOWNLOADS", "never")
    env.update(extra)
    return env


def run_checked(
    command: list[str],
    *,
    cwd: Path,
    env: dict[str, str] | None = None,
    timeout: float = 600,
) -> subprocess.CompletedProcess[str]:
    """Run a command; on failure, fail the test and show everything it printed."""
    result = subprocess.run(
        command,
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(
            f"`{' '.join(command)}` exited {result.returncode} in {cwd}\n"
            f"--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}",
            pytrace=False,
        )
    return result


PROJECT_CHECKS = (
    ["uv", "lock", "--locked", "--offline"],
    ["uv", "sync", "--locked"],
    ["uv", "run", "ruff", "format", "--check"],
    ["uv", "run", "ruff", "check"],
    ["uv", "run", "mypy"],
)
"""A rendered project's lock, sync, format, lint and type checks, as its CI and docs run them."""
SUMMARY = re.compile(r"^=+ (?P<body>.+) in [\d.]+s(?: \([\d:]+\))? =+$", re.MULTILINE)


def pytest_counts(output: str) -> dict[str, int]:
    """Read the counts from pytest's final summary line ("3 passed, 1 skipped in 0.5s")."""
    matches = list(SUMMARY.finditer(output))
    assert matches, f"no pytest summary line in:\n{output}"
    body = matches[-1].group("body")
    assert "no tests ran" not in body, body
    counts = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0}
    for number, word in re.findall(r"(\d+) (\w+)", body):
        key = "errors" if word in {"error", "errors"} else word
        counts[key] = counts.get(key, 0) + int(number)
    return counts


PG_HOST = "127.0.0.1"
PG_PORT = 5432
PG_USER = "postgres"
"""The local PostgreSQL the slow tests use (trust authentication, as on this project's CI)."""


def psql(sql: str, database: str = "postgres") -> str:
    """Run one SQL statement as the superuser and return its unaligned output."""
    return run_checked(
        [
            *("psql", "-h", PG_HOST, "-p", str(PG_PORT), "-U", PG_USER, "-d", database),
            *("-v", "ON_ERROR_STOP=1", "-Atqc", sql),
        ],
        cwd=Path.cwd(),
        timeout=60,
    ).stdout.strip()


@contextmanager
def scratch_database(prefix: str) -> Iterator[str]:
    """Create a fresh PostgreSQL database named ``<prefix>_<random>``; drop it on the way out."""
    name = f"{prefix}_{secrets.token_hex(4)}"
    psql(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def postgres_url(
    database: str, *, port: int = PG_PORT, driver: str = "asyncpg", user: str = PG_USER
) -> str:
    """Return the SQLAlchemy URL of a local database."""
    return f"postgresql+{driver}://{user}@{PG_HOST}:{port}/{database}"
