"""Rendering fixtures: pytest-copier for quick renders, copier's API for trust-proof renders."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from copier import run_copy

from tests.dockerfile import parse_dockerfile, runtime_contract
from tests.helpers import (
    ALL_COMBOS,
    COMBOS,
    ROOT,
    Combo,
    Render,
    Rendered,
    commit_all,
    drop_example,
    git,
    list_files,
)
from tests.pgbouncer import PgBouncer, running_pgbouncer
from tests.runtime import Interpreters, Runtime, build_runtime

PATHS = ("copier.yml", "template")


@pytest.fixture(scope="session")
def copier_template_paths() -> list[str]:
    """Copy only what a user's `copier copy` reads (pytest-copier would copy the whole repo)."""
    return list(PATHS)


@pytest.fixture(scope="session")
def template_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Return a throw-away git repo (absolute path) holding the working tree's template."""
    repo = tmp_path_factory.mktemp("template-repo")
    # What git sees in the working tree (committed, changed or new, minus ignored files such as
    # __pycache__ left by a symlinked render): the same set a copy from this checkout would use.
    listed = git(ROOT, "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", *PATHS)
    for name in sorted(set(filter(None, listed.split("\0")))):
        source = ROOT / name
        if source.is_file():  # a tracked file deleted in the working tree is left out
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, repo / name)
    commit_all(repo, "template under test", init=True)
    return repo


@pytest.fixture(scope="session")
def render(template_repo: Path) -> Render:
    """Return a renderer that refuses unsafe features, as a user's plain `copier copy` does."""

    def _render(dst: Path, **answers: str | bool) -> Path:
        run_copy(
            str(template_repo),
            dst,
            data=answers,
            defaults=True,
            vcs_ref="HEAD",
            unsafe=False,
            quiet=True,
        )
        return dst

    return _render


def render_combo(
    combo: Combo, tmp_path_factory: pytest.TempPathFactory, render: Render
) -> Rendered:
    """Render one answer combination, committed to a fresh git repo."""
    dst = tmp_path_factory.mktemp(combo.id) / combo.slug
    if combo.example:
        path = render(dst, **combo.answers)
        files = list_files(path)
        commit_all(path, "chore: render from keel", init=True)
        return Rendered(path=path, combo=combo, files=files)
    # Without the example: rendered with it, then dropped as a user would drop it, so the
    # generated suite proves the dropped project works (test_example.py: it equals a fresh
    # render without the example).
    path = render(dst, **{**combo.answers, "example": True})
    commit_all(path, "chore: render from keel", init=True)
    drop_example(path)
    files = list_files(path)
    commit_all(path, "chore: drop the example")
    return Rendered(path=path, combo=combo, files=files)


@pytest.fixture(scope="session")
def combo_renders(
    tmp_path_factory: pytest.TempPathFactory, render: Render
) -> Callable[[Combo], Rendered]:
    """Render each answer combination at most once per session, whichever fixture asks first."""
    renders: dict[Combo, Rendered] = {}

    def _get(combo: Combo) -> Rendered:
        if combo not in renders:
            renders[combo] = render_combo(combo, tmp_path_factory, render)
        return renders[combo]

    return _get


@pytest.fixture(scope="session", params=COMBOS, ids=[combo.id for combo in COMBOS])
def rendered(
    request: pytest.FixtureRequest, combo_renders: Callable[[Combo], Rendered]
) -> Rendered:
    """One of the main answer combinations, rendered once per session."""
    return combo_renders(request.param)


@pytest.fixture(scope="session", params=ALL_COMBOS, ids=[combo.id for combo in ALL_COMBOS])
def rendered_any(
    request: pytest.FixtureRequest, combo_renders: Callable[[Combo], Rendered]
) -> Rendered:
    """Every answer combination (python_version x example), rendered once per session."""
    return combo_renders(request.param)


def world_readable_dir(prefix: str) -> Path:
    """Make a temp dir the image's uid can enter (pytest's own temp folders are 0700)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


@pytest.fixture(scope="session")
def interpreters() -> Iterator[Interpreters]:
    """Interpreters the image's uid can start, copied at most once per Python version."""
    root = world_readable_dir("keel-python-")
    try:
        yield Interpreters(root)
    finally:
        shutil.rmtree(root)


@pytest.fixture(scope="session")
def runtime(rendered: Rendered, interpreters: Interpreters) -> Iterator[Runtime]:
    """Build the image's venv with the builder's own `uv sync` and lay out its working dir."""
    contract = runtime_contract(parse_dockerfile(rendered.path / "Dockerfile"))
    root = world_readable_dir("keel-runtime-")
    try:
        yield build_runtime(rendered, contract, root, interpreters)
    finally:
        shutil.rmtree(root)


@pytest.fixture(scope="session")
def pgbouncer() -> Iterator[PgBouncer]:
    """A real PgBouncer 1.21+ in transaction mode in front of the local PostgreSQL."""
    with running_pgbouncer() as started:
        yield started
