"""A stand-in for the built image: its venv, built the Dockerfile's way, and its runtime settings.

There is no Docker engine here. The builder's last `uv sync` is replayed into a fresh venv on
the image's Python version, and the runtime stage's ENV, WORKDIR, USER and CMD are translated
to that venv, so tests can start the exact CMD as the image's uid.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from tests.dockerfile import RuntimeContract
from tests.helpers import Rendered, project_env, run_checked

# Parts of an interpreter install that neither a venv nor the service needs.
UNUSED_LIB_PARTS = ("test", "idlelib", "tkinter", "turtledemo", "ensurepip", "site-packages")


@dataclass(frozen=True)
class Runtime:
    """A stand-in for the image: the runtime venv plus the runtime stage's settings."""

    root: Path
    argv: list[str]
    env: dict[str, str]
    workdir: Path
    uid: int
    gid: int


@dataclass(frozen=True)
class Interpreter:
    """A Python the image's uid can start, and the environment it needs for that."""

    executable: Path
    env: dict[str, str] = field(default_factory=dict)


class Interpreters:
    """The interpreters uv finds, copied once to a world-readable place when the uid needs it.

    Interpreters installed under a private (0700) home directory, as version managers do for
    the superuser, cannot be started by any other uid. A copy of the install tree works: CPython
    finds its standard library relative to the executable. A shared-library build also needs
    its `libpython` found, which the image does through the loader cache; here the copy's
    `lib` goes on LD_LIBRARY_PATH (searched before the original's RUNPATH).
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._found: dict[str, Interpreter] = {}

    def get(self, request: str, *, uid: int, gid: int) -> Interpreter:
        """Return the interpreter uv finds for ``request``, copied if ``uid:gid`` cannot run it."""
        if request not in self._found:
            find = ["uv", "python", "find", request]
            found = Path(run_checked(find, cwd=self.root, env=project_env()).stdout.strip())
            interpreter = Interpreter(found)
            if os.geteuid() == 0 and not can_run_as(found, uid, gid):
                interpreter = self._copy(found, self.root / request)
            self._found[request] = interpreter
        return self._found[request]

    def _copy(self, found: Path, dest: Path) -> Interpreter:
        probe = [str(found), "-c", "import sys; print(sys.base_prefix)"]
        prefix = Path(run_checked(probe, cwd=self.root).stdout.strip())
        executable = found.resolve().relative_to(prefix)
        skip = shutil.ignore_patterns(*UNUSED_LIB_PARTS, "config-*")
        (dest / executable).parent.mkdir(parents=True)
        link_or_copy(prefix / executable, dest / executable)
        shutil.copytree(
            prefix / "lib", dest / "lib", symlinks=True, ignore=skip, copy_function=link_or_copy
        )
        env = {}
        if any((dest / "lib").glob("libpython*.so*")):
            env["LD_LIBRARY_PATH"] = str(dest / "lib")
        return Interpreter(dest / executable, env)


def link_or_copy(source: str | Path, dest: str | Path) -> None:
    """Hard-link a file (instant, same bytes) or copy it across file systems."""
    try:
        os.link(source, dest)
    except OSError:
        shutil.copy2(source, dest)


def can_run_as(python: Path, uid: int, gid: int) -> bool:
    """Tell whether `uid:gid` can start this interpreter at all."""
    try:
        probe = subprocess.run(
            [str(python), "-c", "pass"], user=uid, group=gid, capture_output=True, check=False
        )
    except PermissionError:
        return False
    return probe.returncode == 0


def build_runtime(
    rendered: Rendered, contract: RuntimeContract, root: Path, interpreters: Interpreters
) -> Runtime:
    """Run the builder's last `uv sync` and the RUNs after it into root/venv; translate the ENV."""
    python = interpreters.get(contract.build_env["UV_PYTHON"], uid=contract.uid, gid=contract.gid)
    venv = root / "venv"
    build_env = project_env(
        **{**contract.build_env, "UV_PYTHON": str(python.executable)},
        **python.env,
        UV_PROJECT_ENVIRONMENT=str(venv),
    )
    run_checked(contract.sync_argv, cwd=rendered.path, env=build_env)
    for argv in contract.finish_argvs(venv):
        run_checked(argv, cwd=rendered.path, env=build_env)
    # Docker sets HOME from the image user's passwd entry (`--no-create-home`: a missing
    # directory); this machine's HOME may be private, and libpq-style clients such as asyncpg
    # fail on an unreadable ~/.postgresql instead of skipping it.
    env = contract.env_for(venv, project_env(**python.env, HOME=str(root / "nonexistent")))
    workdir = root / "workdir"
    workdir.mkdir()
    if os.geteuid() == 0:
        os.chown(workdir, contract.uid, contract.gid)
    return Runtime(root, contract.argv, env, workdir, contract.uid, contract.gid)
