"""The migrations ship inside the `app` package, so the image's venv alone can run them.

The image copies only the venv into its runtime stage; `python -m app.migrate` finds the
scripts as package data (`app:migrations`). These checks make sure nothing on the way (the
build context, the wheel) leaves a migration file behind.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from tests.dockerfile import is_ignored, read_dockerignore
from tests.helpers import Rendered, project_env, run_checked

PACKAGE_DIRS = ("src/app/migrations/", "src/app/models/")


def packaged_sources(rendered: Rendered) -> list[str]:
    """Return the rendered migration and model files, as paths in the project."""
    return [path for path in rendered.files if path.startswith(PACKAGE_DIRS)]


def test_rendered_project_has_the_migration_environment(rendered: Rendered) -> None:
    """env.py, the revision template, the first revision and the models registry are rendered."""
    assert {
        "src/app/migrate.py",
        "src/app/migrations/env.py",
        "src/app/migrations/script.py.mako",
        "src/app/migrations/versions/0001_initial.py",
        "src/app/models/__init__.py",
    } <= set(rendered.files)
    assert not any(path.endswith(".jinja") for path in packaged_sources(rendered))


def test_migrations_reach_the_build_context(rendered: Rendered) -> None:
    """.dockerignore keeps every migration and model file in the context `COPY src` reads."""
    rules = read_dockerignore(rendered.path / ".dockerignore")

    assert [path for path in packaged_sources(rendered) if is_ignored(rules, path)] == []


def test_wheel_carries_the_migrations(rendered: Rendered, tmp_path: Path) -> None:
    """The package built for the image's venv contains every migration and model file."""
    run_checked(
        ["uv", "build", "--wheel", "--out-dir", str(tmp_path)], cwd=rendered.path, env=project_env()
    )
    [wheel] = tmp_path.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())

    expected = {path.removeprefix("src/") for path in packaged_sources(rendered)}
    assert "app/migrations/script.py.mako" in expected
    assert expected - names == set()
