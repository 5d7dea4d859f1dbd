# expect: ruff S602 S604
# mypy: ignore-errors
"""A command line built from input and run through a shell: `name="x; rm -rf /"`."""

import subprocess
from collections.abc import Callable


def archive(name: str) -> None:
    """Compress the upload called `name`."""
    subprocess.run(f"gzip uploads/{name}", shell=True, check=True)


def archive_with(runner: Callable[..., object], name: str) -> None:
    """Compress the upload called `name` with a runner that accepts `shell=`."""
    runner(f"gzip uploads/{name}", shell=True)
