"""The example domain leaves cleanly: `copier update -d example=false` equals a fresh render."""

from __future__ import annotations

import filecmp
from pathlib import Path

from tests.helpers import COMBOS, EXAMPLE_FILES, Render, commit_all, drop_example, git, list_files

# Besides the example's own files, re-answering may touch only the files that mention it:
# the router lines, the README's section and the answers file.
MENTIONS = {"src/app/api/router.py", "README.md", ".copier-answers.yml"}


def test_dropping_the_example_equals_a_fresh_render_without_it(
    render: Render, tmp_path: Path
) -> None:
    """Re-answering example=false removes the example's files and routes and nothing else."""
    answers = COMBOS[0].answers
    project = render(tmp_path / "dropped", **{**answers, "example": True})
    commit_all(project, "chore: render from keel", init=True)
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
