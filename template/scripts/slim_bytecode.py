"""Recompile the venv's third-party bytecode without docstrings, asserts and column tables.

The Dockerfile's builder runs this after ``uv sync`` has compiled the venv, with the venv's
own interpreter (``/app/.venv/bin/python scripts/slim_bytecode.py``); the script itself never
reaches the runtime image. It saves about 3.7 MiB of resident memory in every worker.

- **Docstrings.** Every imported module keeps its docstrings in memory for the life of the
  process, and a service never reads its libraries' ones: SQLAlchemy's, pydantic's, FastAPI's
  and the rest hold about 3.4 MiB. ``python -OO`` drops them, but from the service's own code
  too, where FastAPI turns route and model docstrings into the OpenAPI descriptions. So the
  libraries are compiled at ``-OO``'s level (no docstrings, no ``assert`` statements,
  ``__debug__`` false: what they see under ``python -OO``, which they support; SQLAlchemy
  asserts that its event docstrings exist, so docstrings cannot go without the asserts) and
  the packages in `KEEP` stay as uv compiled them. The interpreter itself runs without ``-O``.
- **Column tables** (``-X no_debug_ranges``), another 0.35 MiB: they only place the ``^^^``
  markers under a failing expression in a printed traceback. The JSON logs' tracebacks give
  file, line and function, never columns; the service's own code keeps its tables.

Line numbers stay, so every traceback points at the same lines. Only modules that already have
bytecode are recompiled (uv compiles whatever compiles), and each new file keeps its old file's
invalidation mode (timestamp or source hash), so Python accepts it exactly when it accepted the
old one.

Usage: ``python scripts/slim_bytecode.py [SITE_PACKAGES ...]`` (default: this interpreter's).
"""

import importlib.util
import os
import py_compile
import sys
import sysconfig
from pathlib import Path
from typing import Final

KEEP: Final = frozenset({"app"})
"""Top-level packages left as they are: the service's own code."""

_OPTIMIZE: Final = 2  # what `python -OO` compiles
_NO_COLUMNS: Final = "no_debug_ranges"  # `-X no_debug_ranges`: compile() then omits columns
_HASH_BASED: Final = 0b01
_CHECK_SOURCE: Final = 0b10


def invalidation_mode(cache_path: Path) -> py_compile.PycInvalidationMode:
    """Return how the bytecode file at ``cache_path`` is checked against its source (PEP 552).

    Args:
        cache_path: An existing bytecode file.

    Returns:
        Its mode, read from the flags in its header.
    """
    with cache_path.open("rb") as file:
        flags = int.from_bytes(file.read(8)[4:8], "little")
    if not flags & _HASH_BASED:
        return py_compile.PycInvalidationMode.TIMESTAMP
    if flags & _CHECK_SOURCE:
        return py_compile.PycInvalidationMode.CHECKED_HASH
    return py_compile.PycInvalidationMode.UNCHECKED_HASH


def third_party_modules(site_packages: Path) -> list[tuple[Path, Path]]:
    """Return each compiled module under ``site_packages`` outside `KEEP`, with its bytecode.

    Args:
        site_packages: A venv's site-packages directory.

    Returns:
        Pairs of source file and existing bytecode file, sorted by source path.
    """
    modules = []
    for source_path in sorted(site_packages.rglob("*.py")):
        if source_path.relative_to(site_packages).parts[0].removesuffix(".py") in KEEP:
            continue
        cache_path = Path(importlib.util.cache_from_source(str(source_path)))
        if cache_path.is_file():
            modules.append((source_path, cache_path))
    return modules


def slim(site_packages: Path) -> int:
    """Recompile the third-party modules under ``site_packages`` at ``-OO``'s level, in place.

    Column tables are left out only when this interpreter runs with ``-X no_debug_ranges``
    (`main` makes sure it does).

    Args:
        site_packages: A venv's site-packages directory.

    Returns:
        How many modules were recompiled.
    """
    modules = third_party_modules(site_packages)
    for source_path, cache_path in modules:
        py_compile.compile(
            str(source_path),
            cfile=str(cache_path),
            doraise=True,
            optimize=_OPTIMIZE,
            invalidation_mode=invalidation_mode(cache_path),
        )
    return len(modules)


def main(argv: list[str]) -> int:
    """Slim the given site-packages directories, or this interpreter's; print how many modules."""
    if _NO_COLUMNS not in sys._xoptions:
        # compile() follows the interpreter's flag, which cannot change once it runs.
        os.execv(sys.executable, [sys.executable, "-X", _NO_COLUMNS, *sys.argv])  # noqa: S606
    roots = [Path(arg) for arg in argv] or sorted(
        {Path(sysconfig.get_path(name)) for name in ("purelib", "platlib")}
    )
    for root in roots:
        count = slim(root)
        print(f"slim_bytecode: {root}: {count} modules recompiled")  # noqa: T201 -- build log
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
