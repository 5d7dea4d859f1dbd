"""The template repo's own code passes the checks it asks of rendered services."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.helpers import ROOT

PYTHON_DIRS = ("bench", "scripts", "tests")
CHECKS = {
    "ruff-check": [sys.executable, "-m", "ruff", "check", "--no-cache", *PYTHON_DIRS],
    "ruff-format": [sys.executable, "-m", "ruff", "format", "--check", "--no-cache", *PYTHON_DIRS],
    "mypy": [sys.executable, "-m", "mypy"],
}


@pytest.mark.parametrize("command", CHECKS.values(), ids=CHECKS.keys())
def test_repo_code_passes(command: list[str]) -> None:
    """ruff (lint and format) and mypy strict find nothing in scripts/, tests/ and bench/."""
    result = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False
    )

    assert 0 == result.returncode, result.stdout + result.stderr
