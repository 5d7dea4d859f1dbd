"""scripts/slim_bytecode.py, which the Dockerfile's builder runs on the image's venv."""

import compileall
import json
import py_compile
import subprocess
import sys
from pathlib import Path

import pytest

from scripts.slim_bytecode import KEEP, invalidation_mode, third_party_modules

SCRIPT = Path(__file__).parents[2] / "scripts" / "slim_bytecode.py"

LIBRARY = '''"""A library module."""


def documented(flag):
    """A function's docstring."""
    assert flag, "an assert"
    return __debug__


class Documented:
    """A class's docstring."""

    def method(self):
        """Only a docstring: the body must stay valid."""


def fails():
    return {"key": 1}["missing"]
'''

APP = '''"""The service."""


def debug():
    return __debug__
'''

# Imports both packages from the fake site-packages and reports what their bytecode holds.
PROBE = r"""
import json, sys, traceback
sys.path.insert(0, sys.argv[1])
import lib, app
try:
    lib.fails()
except KeyError as error:
    frame = traceback.extract_tb(error.__traceback__)[-1]
try:
    library_debug, library_asserts = lib.documented(False), False
except AssertionError:
    library_debug, library_asserts = True, True
columns = [p[2] for p in lib.fails.__code__.co_positions() if p[2] is not None]
print(json.dumps({
    "lib_doc": lib.__doc__,
    "function_doc": lib.documented.__doc__,
    "class_doc": lib.Documented.__doc__,
    "method_doc": lib.Documented.method.__doc__,
    "library_asserts": library_asserts,
    "library_debug": library_debug,
    "method_returns": lib.Documented().method(),
    "failing_line": frame.lineno,
    "library_columns": len(columns),
    "app_doc": app.__doc__,
    "app_debug": app.debug(),
}))
"""


def fake_site_packages(root: Path, mode: py_compile.PycInvalidationMode) -> Path:
    """Write a library and an `app` package under ``root`` and compile them as uv does."""
    site = root / "site-packages"
    (site / "lib").mkdir(parents=True)
    (site / "lib" / "__init__.py").write_text(LIBRARY)
    (site / "app").mkdir()
    (site / "app" / "__init__.py").write_text(APP)
    (site / "broken.py").write_text("def (:\n")  # uv skips what does not compile; so must we
    assert compileall.compile_dir(site, quiet=2, invalidation_mode=mode) is False
    return site


def probe(site: Path) -> dict[str, object]:
    """Import the fake packages in a fresh interpreter that may not write bytecode."""
    completed = subprocess.run(  # noqa: S603 -- fixed argv, no shell
        [sys.executable, "-B", "-c", PROBE, str(site)],
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, object] = json.loads(completed.stdout)
    return result


def slim(site: Path) -> str:
    """Run the script the way the Dockerfile does, on ``site``."""
    completed = subprocess.run(  # noqa: S603 -- fixed argv, no shell
        [sys.executable, str(SCRIPT), str(site)], capture_output=True, text=True, check=True
    )
    return completed.stdout


def test_libraries_lose_docstrings_asserts_and_columns_the_service_keeps_them(
    tmp_path: Path,
) -> None:
    """Only modules outside KEEP change, and only as `python -OO` plus no column tables would."""
    site = fake_site_packages(tmp_path, py_compile.PycInvalidationMode.TIMESTAMP)
    before = probe(site)

    output = slim(site)
    after = probe(site)

    assert before["lib_doc"] == "A library module."
    assert before["function_doc"] == "A function's docstring."
    assert before["library_asserts"] is True
    assert before["library_debug"] is True
    assert before["library_columns"] != 0
    assert f"{site}: 1 modules recompiled" in output
    assert {
        "lib_doc": None,
        "function_doc": None,
        "class_doc": None,
        "method_doc": None,
        "library_asserts": False,
        "library_debug": False,
        "method_returns": None,
        "failing_line": before["failing_line"],
        "library_columns": 0,
        "app_doc": "The service.",
        "app_debug": True,
    } == after


@pytest.mark.parametrize("mode", list(py_compile.PycInvalidationMode), ids=lambda m: m.name)
def test_recompiled_bytecode_keeps_its_invalidation_mode(
    tmp_path: Path, mode: py_compile.PycInvalidationMode
) -> None:
    """Python accepts the new file exactly when it accepted the old one (PEP 552 flags)."""
    site = fake_site_packages(tmp_path, mode)
    [(_, cache_path)] = third_party_modules(site)

    assert mode == invalidation_mode(cache_path)
    slim(site)

    assert mode == invalidation_mode(cache_path)
    assert probe(site)["function_doc"] is None  # loaded from the new file, not the source


def test_only_compiled_modules_outside_keep_are_chosen(tmp_path: Path) -> None:
    """The service's packages and modules without bytecode are left alone."""
    site = fake_site_packages(tmp_path, py_compile.PycInvalidationMode.TIMESTAMP)
    (site / "loose.py").write_text("x = 1\n")  # never compiled

    chosen = [source.relative_to(site).as_posix() for source, _ in third_party_modules(site)]

    assert chosen == ["lib/__init__.py"]
    assert "app" in KEEP
