# expect: ruff S605 TID251
# expect-message: argument list
# mypy: ignore-errors
"""os.system always runs through a shell, so any input in the string is a command."""

import os


def archive(name: str) -> int:
    """Compress the upload called `name`."""
    return os.system(f"gzip uploads/{name}")
