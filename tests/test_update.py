"""Slow: `copier update` from an older keel release keeps the user's edits and lands the release's.

keel has no release tags yet, so the test makes two in a throw-away repository: ``0.1.0`` is
the working tree's template as an older release would differ from it (a file the new release
adds is missing, a file it retires is there, and two files end with lines it removed), and
``0.2.0`` is the working tree's template itself, what a user updates to. A project rendered
from ``0.1.0`` gets the kind of edits a team makes (new modules, lines added to files keel
ships), then ``copier update --defaults`` moves it to the newest tag, as docs/usage.md says.
"""

from __future__ import annotations

import filecmp
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import pytest
import yaml
from copier import run_copy, run_update

from tests.helpers import (
    COMBOS,
    PROJECT_CHECKS,
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
    repo = tmp_path_factory.mktemp("releases")
    _copy_tree(template_repo, repo)
    template = repo / "template"
    added = template / ADDED
    assert added.is_file(), f"{ADDED} left the template: pick another file new in {NEW}"
    added.unlink()
    (template / RETIRED).write_text(RETIRED_TEXT)
    for source, ending in OLD_ENDINGS.items():
        path = template / source
        path.write_text(path.read_text() + ending)
    commit_all(repo, f"release {OLD}", init=True)
    git(repo, "tag", OLD)

    git(repo, "rm", "-r", "--quiet", ".")
    _copy_tree(template_repo, repo)
    commit_all(repo, f"release {NEW}")
    git(repo, "tag", NEW)
    return repo


@pytest.fixture
def render_release(releases: Path) -> Callable[[Path, str], Path]:
    """Render one tag of ``releases`` with the same answers, committed to its own git repo."""

    def _render(dst: Path, tag: str) -> Path:
        run_copy(
            str(releases), dst, data=ANSWERS, defaults=True, vcs_ref=tag, unsafe=False, quiet=True
        )
        commit_all(dst, f"chore: render from keel {tag}", init=True)
        return dst

    return _render


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


def test_update_keeps_user_edits_and_lands_the_release(
    render_release: Callable[[Path, str], Path], tmp_path: Path
) -> None:
    """After the update the project is the new release plus the user's edits, and its checks pass."""
    project = render_release(tmp_path / "project", OLD)
    assert (project / RETIRED).is_file()
    assert not (project / ADDED).exists()
    for name, edit in USER_LINES.items():
        path = project / name
        path.write_text(_add_user_line(path.read_text(), edit))
    for name, text in USER_FILES.items():
        (project / name).write_text(text)
    commit_all(project, "feat: greet the front desk")

    _update(project)

    fresh = render_release(tmp_path / "fresh", NEW)
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
    render_release: Callable[[Path, str], Path],
    tmp_path: Path,
    conflict: Literal["inline", "rej"],
) -> None:
    """An edit to lines the release removed conflicts; nothing of the user's is lost."""
    project = render_release(tmp_path / "project", OLD)
    readme = project / "README.md"
    old_line = "This section was in keel 0.1.0; 0.2.0 removed it."
    user_line = "We still run the 0.1.0 upgrade steps every quarter."
    text = readme.read_text()
    assert old_line in text
    readme.write_text(text.replace(old_line, user_line))
    git(project, "commit", "--quiet", "--all", "--message", "docs: our upgrade routine")

    _update(project, conflict=conflict)

    fresh = render_release(tmp_path / "fresh", NEW)
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
