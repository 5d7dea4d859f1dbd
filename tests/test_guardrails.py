"""Slow: every guardrail of the rendered project catches its known-bad snippet, by name.

Each file in tests/guardrails/ is one classic production bug. Its header names the check that
must catch it and what that check must say:

    # expect: ruff B006                   -> dropped into src/app/, `ruff check` reports B006
    # expect: mypy no-untyped-def         -> dropped into src/app/, `mypy` reports that code
    # expect: pytest event loop blocked   -> dropped into tests/, `pytest` fails saying that
    # expect: service-test tests/unit/test_x.py APP_  -> dropped into src/app/, that test of
                                             the project's own suite fails saying `APP_`
    # expect-message: app.core.concurrency  (optional: text the ruff message must contain)

The snippets carry `# mypy: ignore-errors` so that the template repo's own mypy run skips them
(tests/guardrails/ruff.toml does the same for ruff); that line is stripped on the way in.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.helpers import ROOT, Render, commit_all, git, project_env, run_checked

pytestmark = pytest.mark.slow

CORPUS = ROOT / "tests" / "guardrails"
EXPECT = re.compile(
    r"^# expect: (?P<check>ruff|mypy|pytest|service-test) (?P<what>.+)$", re.MULTILINE
)
EXPECT_MESSAGE = re.compile(r"^# expect-message: (?P<text>.+)$", re.MULTILINE)
REPO_ONLY = "# mypy: ignore-errors\n"
MYPY_ERROR = re.compile(r"^(?P<path>[^:\n]+):\d+: error: .*\[(?P<code>[a-z-]+)\]$", re.MULTILINE)


@dataclass(frozen=True)
class Snippet:
    """One known-bad file of the corpus and what must catch it."""

    source: Path
    expectations: tuple[tuple[str, str], ...]
    messages: tuple[str, ...]

    @classmethod
    def load(cls, source: Path) -> Snippet:
        """Read a snippet and its `# expect:` header."""
        text = source.read_text(encoding="utf-8")
        expectations = tuple((m["check"], m["what"].strip()) for m in EXPECT.finditer(text))
        messages = tuple(m["text"].strip() for m in EXPECT_MESSAGE.finditer(text))
        return cls(source, expectations, messages)

    @property
    def is_test(self) -> bool:
        """Return whether the snippet is a test module (caught by pytest) or service code."""
        return any(check == "pytest" for check, _ in self.expectations)

    @property
    def target(self) -> str:
        """Return where the snippet goes in the rendered project."""
        name = self.source.name
        return f"tests/test_{name}" if self.is_test else f"src/app/{name}"

    @property
    def body(self) -> str:
        """Return the snippet as it lands in the project, without the repo-only mypy switch."""
        return self.source.read_text(encoding="utf-8").replace(REPO_ONLY, "", 1)


SNIPPETS = [Snippet.load(path) for path in sorted(CORPUS.glob("*.py"))]


@pytest.fixture(scope="module")
def project(render: Render, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Render one project with default answers, commit it and install its locked environment."""
    path = render(tmp_path_factory.mktemp("guardrails") / "guard-svc", project_name="Guard Svc")
    commit_all(path, "chore: render from keel", init=True)
    run_checked(["uv", "sync", "--locked"], cwd=path, env=project_env())
    return path.resolve()


def run(project: Path, *command: str) -> subprocess.CompletedProcess[str]:
    """Run a command in the project that is expected to fail; return what it did."""
    return subprocess.run(
        command,
        cwd=project,
        env=project_env(),
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def report(result: subprocess.CompletedProcess[str]) -> str:
    """Format a command's output for an assertion message."""
    return f"exit {result.returncode}\n--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}"


def expect_ruff(project: Path, snippet: Snippet, codes: str) -> None:
    """`ruff check` reports every code (and message text) the snippet expects, in that file."""
    result = run(project, "uv", "run", "ruff", "check", "--output-format=json")
    findings = [
        finding
        for finding in json.loads(result.stdout)
        if Path(finding["filename"]).resolve() == project / snippet.target
    ]
    found = {finding["code"] for finding in findings}

    assert result.returncode == 1, report(result)
    assert set(codes.split()) <= found, f"ruff found {sorted(found)}\n{report(result)}"
    for text in snippet.messages:
        assert any(text in finding["message"] for finding in findings), (text, findings)


def expect_mypy(project: Path, snippet: Snippet, codes: str) -> None:
    """`mypy` (configured paths, strict) reports every error code the snippet expects."""
    result = run(project, "uv", "run", "mypy")
    found = {m["code"] for m in MYPY_ERROR.finditer(result.stdout) if m["path"] == snippet.target}

    assert result.returncode == 1, report(result)
    assert set(codes.split()) <= found, f"mypy found {sorted(found)}\n{report(result)}"


def expect_pytest(project: Path, snippet: Snippet, text: str) -> None:
    """`pytest` runs the snippet's test and fails it (not a collection error) saying `text`."""
    result = run(project, "uv", "run", "pytest", "-p", "no:cacheprovider", snippet.target)

    assert result.returncode == 1, report(result)
    assert text in result.stdout, report(result)


def expect_service_test(project: Path, _: Snippet, what: str) -> None:
    """A test of the project's own suite fails (not a collection error) saying the text."""
    test, text = what.split(maxsplit=1)
    result = run(project, "uv", "run", "pytest", "-p", "no:cacheprovider", test)

    assert result.returncode == 1, report(result)
    assert text in result.stdout, report(result)


CHECKS: dict[str, Callable[[Path, Snippet, str], None]] = {
    "ruff": expect_ruff,
    "mypy": expect_mypy,
    "pytest": expect_pytest,
    "service-test": expect_service_test,
}


@pytest.mark.parametrize("snippet", SNIPPETS, ids=[snippet.source.name for snippet in SNIPPETS])
def test_guardrail_catches_snippet(project: Path, snippet: Snippet) -> None:
    """The check named in the snippet's header fails on it, naming the expected code."""
    target = project / snippet.target
    target.write_text(snippet.body, encoding="utf-8")
    try:
        for check, what in snippet.expectations:
            CHECKS[check](project, snippet, what)
    finally:
        target.unlink()

    assert "" == git(project, "status", "--porcelain")


@pytest.mark.parametrize(
    "command",
    [
        ["uv", "run", "ruff", "format", "--check"],
        ["uv", "run", "ruff", "check"],
        ["uv", "run", "mypy"],
        ["uv", "run", "pytest", "-p", "no:cacheprovider"],
        ["uv", "run", "hadolint", "Dockerfile"],
        ["uv", "run", "zizmor", "--offline", ".github"],
        ["uv", "lock", "--check", "--offline"],
    ],
    ids=["ruff-format", "ruff-check", "mypy", "pytest", "hadolint", "zizmor", "uv-lock"],
)
def test_clean_render_passes_every_guardrail(project: Path, command: list[str]) -> None:
    """Without a snippet, each check passes on the rendered project."""
    result = run(project, *command)

    assert result.returncode == 0, report(result)


def test_hadolint_catches_a_floating_base_image_and_a_root_user(project: Path) -> None:
    """hadolint reports DL3007 (`:latest`) and DL3002 (last USER is root) on a bad variant."""
    dockerfile = (project / "Dockerfile").read_text(encoding="utf-8")
    bad = re.sub(r"^FROM \S+", "FROM python:latest", dockerfile, flags=re.MULTILINE)
    target = project / "Dockerfile.bad"
    target.write_text(f"{bad}USER root\n", encoding="utf-8")
    try:
        result = run(project, "uv", "run", "hadolint", "--no-color", "--format=json", target.name)
    finally:
        target.unlink()
    found = {finding["code"] for finding in json.loads(result.stdout)}

    assert result.returncode == 1, report(result)
    assert {"DL3007", "DL3002"} <= found, sorted(found)


def test_zizmor_catches_an_action_not_pinned_by_sha(project: Path) -> None:
    """zizmor reports unpinned-uses when a workflow's action is pinned by branch, not SHA."""
    workflow = (project / ".github" / "workflows" / "ci.yml").read_text(encoding="utf-8")
    bad, pins = re.subn(
        r"uses: (?P<action>[\w.-]+/[\w./-]+)@[0-9a-f]{40}.*$",
        r"uses: \g<action>@main",
        workflow,
        flags=re.MULTILINE,
    )
    target = project / ".github" / "workflows" / "unpinned.yml"
    target.write_text(bad, encoding="utf-8")
    try:
        result = run(project, "uv", "run", "zizmor", "--offline", "--format=json", str(target))
    finally:
        target.unlink()
    found = {finding["ident"] for finding in json.loads(result.stdout)}

    assert pins > 0
    assert result.returncode != 0, report(result)
    assert "unpinned-uses" in found, sorted(found)


def test_uv_lock_check_catches_a_dependency_added_without_relocking(project: Path) -> None:
    """`uv lock --check` (pre-commit and CI) fails when pyproject.toml and uv.lock disagree."""
    pyproject = project / "pyproject.toml"
    original = pyproject.read_text(encoding="utf-8")
    pyproject.write_text(
        original.replace("dependencies = [\n", 'dependencies = [\n    "click>=8",\n', 1),
        encoding="utf-8",
    )
    try:
        result = run(project, "uv", "lock", "--check", "--offline")
        if "network was disabled" in result.stderr:
            # uv's cache lacks metadata for the new dependency: let uv fetch it from the index.
            result = run(project, "uv", "lock", "--check")
    finally:
        pyproject.write_text(original, encoding="utf-8")

    assert result.returncode == 1, report(result)
    assert "needs to be updated" in result.stderr, report(result)
    assert "" == git(project, "status", "--porcelain")


@contextmanager
def edited(project: Path, path: str, old: str, new: str) -> Iterator[None]:
    """Replace ``old`` by ``new`` in one file of the project for the block, then restore it."""
    target = project / path
    original = target.read_text(encoding="utf-8")
    assert old in original, f"{path} no longer contains {old!r}"
    target.write_text(original.replace(old, new, 1), encoding="utf-8")
    try:
        yield
    finally:
        target.write_text(original, encoding="utf-8")


def deploy_schema_step(project: Path) -> str:
    """Return the script of the CI lint job's step that checks deploy/ and compose.yaml."""
    workflow = yaml.safe_load((project / ".github" / "workflows" / "ci.yml").read_text())
    [script] = [
        step["run"]
        for step in workflow["jobs"]["lint"]["steps"]
        if "kubernetes-validate" in step.get("run", "")
    ]
    return str(script)


def run_deploy_schema_step(project: Path) -> subprocess.CompletedProcess[str]:
    """Run that step as GitHub runs a `run:` step (`bash -eo pipefail`)."""
    return run(
        project,
        "bash",
        "--noprofile",
        "--norc",
        "-eo",
        "pipefail",
        "-c",
        deploy_schema_step(project),
    )


def test_clean_render_passes_the_deploy_schema_checks(project: Path) -> None:
    """Every manifest, compose.yaml and dependabot.yml pass the workflow's schema step."""
    manifests = sorted(
        path.relative_to(project).as_posix()
        for path in (project / "deploy" / "kubernetes").rglob("*.yaml")
        if path.name != "kustomization.yaml"
    )
    result = run_deploy_schema_step(project)
    validated = re.findall(r"^INFO (\S+) passed for resource", result.stdout, flags=re.MULTILINE)

    assert result.returncode == 0, report(result)
    assert sorted(validated) == manifests, report(result)
    assert len(manifests) == 5
    assert result.stdout.count("ok -- validation done") == 2, report(result)


@pytest.mark.parametrize(
    ("path", "old", "new", "message"),
    [
        (
            "deploy/kubernetes/deployment.yaml",
            "livenessProbe:",
            "livenesProbe:",
            "'livenesProbe' was unexpected",
        ),
        (
            "deploy/kubernetes/migrate/job.yaml",
            "backoffLimit: 2",
            "backoffLimit: two",
            "'two' is not of type 'integer'",
        ),
        ("compose.yaml", "stop_grace_period:", "stop_grace_periods:", "'stop_grace_periods'"),
        (".github/dependabot.yml", "interval: weekly", "interval: fortnightly", "fortnightly"),
    ],
    ids=["manifest-misspelt-field", "manifest-wrong-type", "compose", "dependabot"],
)
def test_deploy_schema_checks_catch_a_bad_file(
    project: Path, path: str, old: str, new: str, message: str
) -> None:
    """The workflow's schema step fails on a misspelt or mistyped field, naming it."""
    with edited(project, path, old, new):
        result = run_deploy_schema_step(project)

    assert result.returncode != 0, report(result)
    assert message in result.stdout + result.stderr, report(result)
    assert "" == git(project, "status", "--porcelain")


@pytest.mark.parametrize(
    ("path", "old", "new", "failure"),
    [
        (
            "deploy/kubernetes/deployment.yaml",
            "terminationGracePeriodSeconds: 30",
            "terminationGracePeriodSeconds: 20",
            "test_grace_periods_cover_drain_and_shutdown",
        ),
        (
            "deploy/kubernetes/horizontalpodautoscaler.yaml",
            "maxReplicas: 8",
            "maxReplicas: 12",
            "exceed 97: lower maxReplicas or the pool, or put PgBouncer in front",
        ),
        (
            "deploy/kubernetes/deployment.yaml",
            "name: APP_LOG__FORMAT",
            "name: APP_LOG_FORMAT",
            "['APP_LOG_FORMAT'] are not settings",
        ),
    ],
    ids=["grace-period", "connections", "unknown-variable"],
)
def test_deploy_tests_catch_a_manifest_that_disagrees_with_the_service(
    project: Path, path: str, old: str, new: str, failure: str
) -> None:
    """What a schema cannot see, the project's tests/unit/test_deploy.py fails on."""
    with edited(project, path, old, new):
        result = run(
            project, "uv", "run", "pytest", "-p", "no:cacheprovider", "tests/unit/test_deploy.py"
        )
        schema = run_deploy_schema_step(project)

    assert result.returncode == 1, report(result)
    assert failure in result.stdout, report(result)
    assert schema.returncode == 0, report(schema)
    assert "" == git(project, "status", "--porcelain")


def test_corpus_covers_every_required_catcher() -> None:
    """The corpus has a snippet for each check the issue names, and every header parses."""
    caught = {what for s in SNIPPETS for _, whats in s.expectations for what in whats.split()}
    required = {
        *("B006", "E722", "BLE001", "S113", "S301", "S602", "S604", "S605"),
        *("ASYNC251", "ASYNC210", "DTZ005", "RUF012", "B019", "T201", "G004", "RUF032"),
        *("TID251", "PGH003", "no-untyped-def", "ignore-without-code"),
    }
    runtime = {what for s in SNIPPETS for check, what in s.expectations if check == "pytest"}
    services = {
        what.split()[0]
        for s in SNIPPETS
        for check, what in s.expectations
        if check == "service-test"
    }

    assert all(s.expectations for s in SNIPPETS), [s.source.name for s in SNIPPETS]
    assert required <= caught, sorted(required - caught)
    assert {"lazy='raise'", "event loop blocked", "does not support item assignment"} <= runtime
    assert {"tests/unit/test_code_rules.py", "tests/unit/test_import_side_effects.py"} <= services
