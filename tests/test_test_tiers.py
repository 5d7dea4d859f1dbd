"""The rendered project's test tiers: a bare `pytest` is the fast tier, CI runs every test.

A bare `uv run pytest` deselects the tests marked `slow` (real processes, load, schemathesis,
long timeouts) and says so; the CI workflow's test job must select them all again.
"""

from __future__ import annotations

import re
import shlex

import pytest
import yaml

from tests.helpers import Rendered, project_env, run_checked

EVERY_TIER = "slow or not slow"
COLLECTED = re.compile(r"^(?:(?P<kept>\d+)/)?(?P<total>\d+) tests? collected", re.MULTILINE)


def ci_pytest_args(rendered: Rendered) -> list[str]:
    """Return the arguments the CI workflow's test job gives `pytest`."""
    workflow = yaml.safe_load((rendered.path / ".github/workflows/ci.yml").read_text())
    runs = [
        step["run"] for step in workflow["jobs"]["test"]["steps"] if "pytest" in step.get("run", "")
    ]
    assert len(runs) == 1, runs
    argv = shlex.split(runs[0])
    return argv[argv.index("pytest") + 1 :]


def test_ci_selects_every_tier(rendered: Rendered) -> None:
    """The CI test job runs `pytest -m "slow or not slow"`, so the slow tier runs on every push."""
    args = ci_pytest_args(rendered)

    assert "-m" in args, args
    assert args[args.index("-m") + 1] == EVERY_TIER


def collect(rendered: Rendered, *args: str) -> tuple[set[str], str]:
    """Collect the rendered suite with ``args``; return the test ids and pytest's output."""
    result = run_checked(
        ["uv", "run", "pytest", "-p", "no:cacheprovider", "--collect-only", "-q", *args],
        cwd=rendered.path,
        env=project_env(),
    )
    ids = {line for line in result.stdout.splitlines() if "::" in line and " " not in line}
    return ids, result.stdout


@pytest.mark.slow
def test_bare_pytest_leaves_out_exactly_the_slow_tests(rendered: Rendered) -> None:
    """Bare: everything but the `slow` tests, with a count and a hint; CI's arguments: all."""
    run_checked(["uv", "sync", "--locked"], cwd=rendered.path, env=project_env())

    bare, bare_output = collect(rendered)
    everything, everything_output = collect(rendered, *ci_pytest_args(rendered))
    slow, _ = collect(rendered, "-m", "slow")

    assert bare, bare_output
    assert slow, "no test is marked slow"
    assert bare == everything - slow
    assert everything == bare | slow
    # The real-process tests are slow, and so is schemathesis when the example is there.
    assert {test for test in everything if test.startswith("tests/process/")} <= slow
    if rendered.combo.example:
        assert any(test.startswith("tests/api/test_ledger_schema.py::") for test in slow)
    bare_count = COLLECTED.search(bare_output)
    assert bare_count is not None, bare_output
    assert (bare_count["kept"], bare_count["total"]) == (str(len(bare)), str(len(everything)))
    assert f"({len(slow)} deselected)" in bare_output
    assert f'{len(slow)} slow tests deselected; run them with: pytest -m "{EVERY_TIER}"' in (
        bare_output
    )
    assert "deselected" not in everything_output
