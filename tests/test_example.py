"""The example domain leaves cleanly: `copier update -d example=false` equals a fresh render."""

from __future__ import annotations

import filecmp
from pathlib import Path

from tests.helpers import COMBOS, Render, drop_example, git, list_files

# What re-answering the question may touch: the example's own files, plus the one line
# each in the router and the answers file that name it.
EXAMPLE_FILES = {
    "src/app/ledger/__init__.py",
    "src/app/ledger/routes.py",
    "src/app/ledger/schemas.py",
    "src/app/ledger/service.py",
    "src/app/models/ledger.py",
    "src/app/migrations/versions/0002_ledger.py",
    "tests/ledger.py",
    "tests/api/test_ledger.py",
    "tests/api/test_ledger_schema.py",
    "tests/unit/test_ledger.py",
    "tests/integration/test_ledger_postgres.py",
}
MENTIONS = {"src/app/api/router.py", ".copier-answers.yml"}


def test_dropping_the_example_equals_a_fresh_render_without_it(
    render: Render, tmp_path: Path
) -> None:
    """Re-answering example=false removes the example's files and routes and nothing else."""
    answers = COMBOS[0].answers
    project = render(tmp_path / "dropped", **{**answers, "example": True})
    git(project, "init", "--quiet")
    git(project, "add", "--all")
    git(project, "commit", "--quiet", "--message", "chore: render from keel")
    before = set(list_files(project))

    drop_example(project)

    fresh = render(tmp_path / "fresh", **{**answers, "example": False})
    after, expected = set(list_files(project)), set(list_files(fresh))
    assert before - after == EXAMPLE_FILES
    assert after == expected
    _, mismatch, errors = filecmp.cmpfiles(project, fresh, sorted(expected), shallow=False)
    assert (mismatch, errors) == ([], [])
    status = git(project, "status", "--porcelain", "--untracked-files=all").splitlines()
    changed = {line[3:] for line in status}
    assert changed == EXAMPLE_FILES | MENTIONS
    router = (project / "src/app/api/router.py").read_text()
    assert "ledger" not in router
