"""Fast checks of copier.yml: every choice renders and every validator refuses bad input."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from tests.helpers import EXAMPLE_FILES, ROOT, Render, load_copier_yml, questions

if TYPE_CHECKING:
    from pytest_copier.plugin import CopierFixture

PYTHON_VERSIONS = ["3.13", "3.12"]
SLUG_SHAPE = (
    "is not a PEP 503 normalised name: start with a letter; "
    "use only a-z, 0-9 and single dashes between them"
)
LOCKED = "is the name of a locked dependency; choose another name"
BAD_SLUGS = [
    pytest.param("", "project_slug must not be empty", id="empty"),
    pytest.param("billing api", f'project_slug "billing api" {SLUG_SHAPE}', id="space"),
    pytest.param("Billing-API", f'project_slug "Billing-API" {SLUG_SHAPE}', id="uppercase"),
    pytest.param("2fa-svc", f'project_slug "2fa-svc" {SLUG_SHAPE}', id="leading-digit"),
    pytest.param("-billing", f'project_slug "-billing" {SLUG_SHAPE}', id="leading-dash"),
    pytest.param("billing-", f'project_slug "billing-" {SLUG_SHAPE}', id="trailing-dash"),
    pytest.param("billing--api", f'project_slug "billing--api" {SLUG_SHAPE}', id="double-dash"),
    pytest.param("billing_api", f'project_slug "billing_api" {SLUG_SHAPE}', id="underscore"),
    pytest.param("billing.api", f'project_slug "billing.api" {SLUG_SHAPE}', id="dot"),
    pytest.param("a;rm -rf", f'project_slug "a;rm -rf" {SLUG_SHAPE}', id="shell-semicolon"),
    pytest.param("$(x)", f'project_slug "$(x)" {SLUG_SHAPE}', id="shell-substitution"),
    pytest.param("../x", f'project_slug "../x" {SLUG_SHAPE}', id="path-traversal"),
    pytest.param("a" * 65, "project_slug must be at most 64 characters (got 65)", id="65-chars"),
    pytest.param("structlog", f'project_slug "structlog" {LOCKED}', id="locked-structlog"),
    pytest.param("fastapi", f'project_slug "fastapi" {LOCKED}', id="locked-fastapi"),
]
GOOD_SLUGS = [
    pytest.param("a", id="one-letter"),
    pytest.param("billing-api-2", id="dashes-and-digit"),
    pytest.param("z" * 64, id="64-chars"),
]
BAD_EMAILS = [
    pytest.param("team", id="no-at"),
    pytest.param("team@example", id="no-dot-in-domain"),
    pytest.param("the team@example.com", id="space"),
    pytest.param('team"@example.com', id="double-quote"),
    pytest.param("team@@example.com", id="two-ats"),
]
BAD_FREE_TEXT = [
    pytest.param("project_name", "   ", "project_name must not be empty", id="blank-name"),
    pytest.param(
        "description",
        'Says "hi"',
        "description must be one line without double quotes or backslashes",
        id="description-quote",
    ),
    pytest.param(
        "description",
        "C:\\path",
        "description must be one line without double quotes or backslashes",
        id="description-backslash",
    ),
    pytest.param(
        "author_name",
        'The "A" Team',
        "author_name must be non-empty and contain no double quotes or backslashes",
        id="author-quote",
    ),
]


def validation_error(question: str, message: str) -> str:
    """Return a regex for copier's error when a validator refuses an answer."""
    return "^" + re.escape(f"Validation error for question '{question}': {message}") + "$"


def read_toml(path: Path) -> dict[str, Any]:
    """Parse a TOML file."""
    return tomllib.loads(path.read_text())


@pytest.mark.parametrize("version", PYTHON_VERSIONS)
def test_python_version_sets_python_version_file(
    copier: CopierFixture, tmp_path: Path, version: str
) -> None:
    """The answered Python version is what `.python-version` pins for uv."""
    project = copier.copy(tmp_path / "out", project_name="Demo Svc", python_version=version)

    assert f"{version}\n" == (project.path / ".python-version").read_text()


@pytest.mark.parametrize("version", PYTHON_VERSIONS)
def test_python_version_sets_docker_base_images(
    copier: CopierFixture, tmp_path: Path, version: str
) -> None:
    """Every python image in the Dockerfile uses the answered version; the runtime is slim."""
    project = copier.copy(tmp_path / "out", project_name="Demo Svc", python_version=version)
    dockerfile = (project.path / "Dockerfile").read_text()

    used = set(re.findall(r"python:?(3\.\d+)", dockerfile))
    assert {version} == used
    assert re.search(
        rf"^FROM python:{re.escape(version)}-slim-bookworm\b", dockerfile, re.MULTILINE
    )


@pytest.mark.parametrize("version", PYTHON_VERSIONS)
def test_python_version_reaches_ci(copier: CopierFixture, tmp_path: Path, version: str) -> None:
    """The rendered CI tests on the answered Python version and no other."""
    project = copier.copy(tmp_path / "out", project_name="Demo Svc", python_version=version)
    workflow = yaml.safe_load((project.path / ".github/workflows/ci.yml").read_text())

    assert {version} == set(ci_python_versions(workflow))


def ci_python_versions(node: object) -> list[str]:
    """Collect every literal value of a `python-version` key in a workflow (not `${{ }}`)."""
    found: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key in {"python-version", "python_version"}:
                values = value if isinstance(value, list) else [value]
                found.extend(str(v) for v in values if "${{" not in str(v))
            else:
                found.extend(ci_python_versions(value))
    elif isinstance(node, list):
        for item in node:
            found.extend(ci_python_versions(item))
    return found


def test_python_version_choices_match_repo_ci_matrix() -> None:
    """The template repo's CI runs the slow tests on exactly the Python versions users can pick."""
    workflow_path = ROOT / ".github" / "workflows" / "ci.yml"
    if not workflow_path.exists():
        pytest.skip("the template repo has no .github/workflows/ci.yml yet")
    choices = {str(choice) for choice in questions()["python_version"]["choices"]}

    versions = set(ci_python_versions(yaml.safe_load(workflow_path.read_text())))

    assert choices <= versions


@pytest.mark.parametrize(
    ("name", "slug"),
    [
        ("Billing API", "billing-api"),
        ("  Billing API  ", "billing-api"),
        ("Data.Pipeline v2", "data-pipeline-v2"),
    ],
    ids=["words", "padded", "punctuation"],
)
def test_project_slug_defaults_from_name(
    copier: CopierFixture, tmp_path: Path, name: str, slug: str
) -> None:
    """Without an explicit slug, the distribution name is derived from the project name."""
    project = copier.copy(tmp_path / "out", project_name=name)

    assert slug == project.answers["project_slug"]
    assert slug == read_toml(project.path / "pyproject.toml")["project"]["name"]


@pytest.mark.parametrize(("slug", "message"), BAD_SLUGS)
def test_project_slug_rejects_bad_input(
    render: Render, tmp_path: Path, slug: str, message: str
) -> None:
    """A bad slug stops the copy with a readable message and writes nothing."""
    dst = tmp_path / "out"

    with pytest.raises(ValueError, match=validation_error("project_slug", message)):
        render(dst, project_name="Billing API", project_slug=slug)

    assert not dst.exists()


@pytest.mark.parametrize("slug", GOOD_SLUGS)
def test_project_slug_accepts_valid_names(render: Render, tmp_path: Path, slug: str) -> None:
    """Valid PEP 503 names at the edges of the rules render and become the distribution name."""
    dst = render(tmp_path / "out", project_name="Billing API", project_slug=slug)

    assert slug == read_toml(dst / "pyproject.toml")["project"]["name"]


@pytest.mark.parametrize("email", BAD_EMAILS)
def test_author_email_rejects_bad_input(render: Render, tmp_path: Path, email: str) -> None:
    """Something that is not an email address is refused and nothing is written."""
    dst = tmp_path / "out"
    message = f'author_email "{email}" is not an email address'

    with pytest.raises(ValueError, match=validation_error("author_email", message)):
        render(dst, project_name="Billing API", author_email=email)

    assert not dst.exists()


@pytest.mark.parametrize(("question", "value", "message"), BAD_FREE_TEXT)
def test_free_text_rejects_toml_breaking_input(
    render: Render, tmp_path: Path, question: str, value: str, message: str
) -> None:
    """Blank names and characters that would break the rendered TOML are refused."""
    dst = tmp_path / "out"
    answers = {"project_name": "Billing API", question: value}

    with pytest.raises(ValueError, match=validation_error(question, message)):
        render(dst, **answers)

    assert not dst.exists()


def test_copy_needs_no_trust(render: Render, tmp_path: Path) -> None:
    """A plain copy with unsafe features refused (`unsafe=False`) renders the whole project."""
    dst = render(tmp_path / "out", project_name="Billing API")

    assert (dst / "pyproject.toml").is_file()
    assert (dst / "uv.lock").is_file()


def test_copier_yml_has_no_trust_requiring_settings() -> None:
    """copier.yml uses neither `_tasks` nor `_jinja_extensions`, which would force --trust."""
    settings = set(load_copier_yml())

    assert set() == settings & {"_tasks", "_jinja_extensions"}


@pytest.mark.parametrize("question", list(questions()))
def test_question_has_type_and_help(question: str) -> None:
    """Every question declares its type and a help text shown at the prompt."""
    spec = questions()[question]

    assert spec.get("type") in {"str", "bool", "int", "float", "yaml", "json", "path"}
    assert str(spec.get("help", "")).strip()


def test_questions_doc_has_one_entry_per_question() -> None:
    """docs/questions.md has exactly one `## <question>` section per copier.yml question."""
    doc = ROOT / "docs" / "questions.md"

    headings = re.findall(r"^## +`?([A-Za-z0-9_]+)`?\s*$", doc.read_text(), re.MULTILINE)

    assert sorted(questions()) == sorted(headings)


def rendered_files(project: Path) -> set[str]:
    """Return every file of a rendered project as POSIX paths relative to it."""
    return {path.relative_to(project).as_posix() for path in project.rglob("*") if path.is_file()}


def test_example_true_renders_the_ledger(render: Render, tmp_path: Path) -> None:
    """The default renders the example domain, its migration, tests and routes."""
    project = render(tmp_path / "out", project_name="Demo Svc")

    assert EXAMPLE_FILES <= rendered_files(project)
    router = (project / "src/app/api/router.py").read_text()
    assert "from app.ledger import routes as ledger" in router
    assert "*ledger.router.routes," in router
    answers = yaml.safe_load((project / ".copier-answers.yml").read_text())
    assert answers["example"] is True


def test_example_false_renders_no_trace_of_it(render: Render, tmp_path: Path) -> None:
    """`example=false` leaves out every example file and every mention of it in code."""
    project = render(tmp_path / "out", project_name="Demo Svc", example=False)

    assert not EXAMPLE_FILES & rendered_files(project)
    assert not [name for name in rendered_files(project) if "ledger" in name]
    for source in (*project.glob("src/**/*.py"), *project.glob("tests/**/*.py")):
        text = source.read_text()
        assert "ledger" not in text.lower(), source
    answers = yaml.safe_load((project / ".copier-answers.yml").read_text())
    assert answers["example"] is False
