"""Fast checks of a rendered project: files, leftover Jinja, parseable config, answers, lock."""

from __future__ import annotations

import difflib
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import ROOT, Render, Rendered, git, project_env, questions, run_checked

REQUIRED_FILES = {
    ".copier-answers.yml",
    ".dockerignore",
    ".env.example",
    ".github/workflows/ci.yml",
    ".gitignore",
    ".pre-commit-config.yaml",
    ".python-version",
    "Dockerfile",
    "README.md",
    "pyproject.toml",
    "src/app/__init__.py",
    "src/app/__main__.py",
    "src/app/main.py",
    "uv.lock",
}
REQUIRED_DIRS = {"src/app/core", "src/app/api", "tests"}
# Files of the template repo itself that must never reach a user's project.
TEMPLATE_ONLY = {"copier.yml", "scripts/relock.py", "docs/questions.md", "uv.lock.jinja"}
LEFTOVER_JINJA = re.compile(r"(?<!\$)\{\{|\{%|\{#")  # `${{ }}` is GitHub Actions syntax
NOT_PORTABLE = re.compile(r'[<>:"|?*\\\s]|[^\x21-\x7e]')
PLACEHOLDER = "keel-placeholder"
# One slug before every locked package, one in the middle, one that shares a package's prefix
# (pydantic < pydantic-audit < pydantic-core), and one after every package.
LOCK_POSITIONS = ["aardvark-api", "kite-svc", "pydantic-audit", "zulu-svc"]


def read_toml(path: Path) -> dict[str, Any]:
    """Parse a TOML file."""
    return tomllib.loads(path.read_text())


def test_render_has_the_contract_files(rendered: Rendered) -> None:
    """Every file and folder the service contract promises is rendered."""
    files = set(rendered.files)

    assert set() == REQUIRED_FILES - files
    assert all((rendered.path / folder).is_dir() for folder in REQUIRED_DIRS)


def test_render_is_fully_tracked_by_git(rendered: Rendered) -> None:
    """The rendered .gitignore hides none of the rendered files, so the first commit has them all."""
    tracked = git(rendered.path, "ls-files").splitlines()

    assert list(rendered.files) == sorted(tracked)


def test_render_has_no_template_artefacts(rendered: Rendered) -> None:
    """No `.jinja` suffix, templated file name or template-repo file reaches the project."""
    files = rendered.files

    leaked = [
        name
        for name in files
        if name.endswith(".jinja") or "{{" in name or "}}" in name or name in TEMPLATE_ONLY
    ]
    assert [] == leaked


def test_render_paths_are_portable(rendered: Rendered) -> None:
    """Paths are printable ASCII without spaces or Windows-reserved characters, and case-unique."""
    files = rendered.files

    assert [] == [name for name in files if NOT_PORTABLE.search(name)]
    assert len(files) == len({name.lower() for name in files})


def test_render_leaves_no_jinja_syntax(rendered: Rendered) -> None:
    """No rendered file still contains `{{`, `{%` or `{#` (GitHub's `${{` is allowed)."""
    leftovers = []
    for name in rendered.files:
        text = (rendered.path / name).read_bytes().decode("utf-8", errors="replace")
        leftovers += [
            f"{name}:{number}: {line.strip()}"
            for number, line in enumerate(text.splitlines(), start=1)
            if LEFTOVER_JINJA.search(line)
        ]

    assert [] == leftovers


def test_render_config_files_parse(rendered: Rendered) -> None:
    """Every TOML and YAML file in the project (uv.lock and the answers file included) parses."""
    parsed = []
    for name in rendered.files:
        path = rendered.path / name
        if name.endswith((".toml", ".lock")):
            tomllib.loads(path.read_text())
            parsed.append(name)
        elif name.endswith((".yml", ".yaml")):
            list(yaml.safe_load_all(path.read_text()))
            parsed.append(name)

    assert {"pyproject.toml", "uv.lock", ".copier-answers.yml"} <= set(parsed)


def test_pyproject_carries_the_answers(rendered: Rendered) -> None:
    """The distribution name, description, author and console script come from the answers."""
    answers = rendered.combo.answers
    project = read_toml(rendered.path / "pyproject.toml")["project"]

    assert answers["project_slug"] == project["name"]
    assert answers["description"] == project["description"]
    assert [{"name": answers["author_name"], "email": answers["author_email"]}] == project[
        "authors"
    ]
    assert "app.__main__:main" == project["scripts"][answers["project_slug"]]


def test_readme_carries_name_and_description(rendered: Rendered) -> None:
    """The README is titled with the project name and states the description."""
    readme = (rendered.path / "README.md").read_text()

    assert readme.startswith(f"# {rendered.combo.answers['project_name']}\n")
    assert rendered.combo.description in readme


def test_answers_file_records_every_answer(rendered: Rendered) -> None:
    """The answers file holds each question's answer plus the template source and commit."""
    recorded = yaml.safe_load((rendered.path / ".copier-answers.yml").read_text())

    assert set(questions()) | {"_commit", "_src_path"} == set(recorded)
    assert rendered.combo.answers == {k: v for k, v in recorded.items() if not k.startswith("_")}
    assert recorded["_commit"]
    assert Path(recorded["_src_path"]).is_absolute()


def test_lock_matches_pyproject_offline(rendered: Rendered) -> None:
    """`uv lock --locked --offline` accepts the shipped lock without network or rewrite."""
    before = (rendered.path / "uv.lock").read_bytes()

    run_checked(["uv", "lock", "--locked", "--offline"], cwd=rendered.path, env=project_env())

    assert before == (rendered.path / "uv.lock").read_bytes()


def test_lock_hashes_every_artifact(rendered: Rendered) -> None:
    """Every sdist and wheel in uv.lock carries a sha256 hash, so sync verifies downloads."""
    lock = read_toml(rendered.path / "uv.lock")
    artifacts = [
        (package["name"], artifact)
        for package in lock["package"]
        for artifact in [package.get("sdist", {}), *package.get("wheels", [])]
        if "url" in artifact
    ]

    unhashed = [
        (name, artifact["url"])
        for name, artifact in artifacts
        if not re.fullmatch(r"sha256:[0-9a-f]{64}", artifact.get("hash", ""))
    ]
    assert len(artifacts) > 100
    assert [] == unhashed


def test_lock_template_is_fresh() -> None:
    """scripts/relock.py --check finds template/uv.lock.jinja up to date with the pyproject."""
    # UV_OFFLINE keeps the check deterministic: with no version upgrade requested, uv lock only
    # re-resolves when pyproject.toml.jinja changed, and then a stale lock is what we report.
    env = project_env(UV_OFFLINE="1")

    result = subprocess.run(
        [sys.executable, "scripts/relock.py", "--check"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )

    assert 0 == result.returncode, result.stdout + result.stderr


@pytest.mark.parametrize("slug", LOCK_POSITIONS)
def test_lock_is_byte_identical_to_uv_lock(render: Render, tmp_path: Path, slug: str) -> None:
    """uv writes exactly the shipped lock, root block position included, for a renamed copy."""
    project = render(tmp_path / "project", project_name="Lock Probe", project_slug=slug)
    shipped = (project / "uv.lock").read_text()
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    for name in ("pyproject.toml", "README.md", ".python-version"):
        shutil.copy2(project / name, scratch / name)
    root_line = f'name = "{slug}"\n'
    assert 1 == shipped.count(root_line)
    (scratch / "uv.lock").write_text(shipped.replace(root_line, f'name = "{PLACEHOLDER}"\n'))

    relock(scratch)

    relocked = (scratch / "uv.lock").read_text()
    diff = difflib.unified_diff(shipped.splitlines(), relocked.splitlines(), lineterm="", n=1)
    assert shipped == relocked, "\n".join(list(diff)[:80])


def relock(project: Path) -> None:
    """Run `uv lock` offline; fall back to the network only when uv's cache is cold."""
    env = project_env()
    offline = subprocess.run(
        ["uv", "lock", "--offline"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if offline.returncode != 0:
        run_checked(["uv", "lock"], cwd=project, env=env, timeout=300)
