# expect: ruff S301 TID251
# expect-message: JSON
# mypy: ignore-errors
"""Unpickling data a client controls runs any code the client chose."""

import pickle


def restore(blob: bytes) -> object:
    """Return the object stored in `blob`."""
    return pickle.loads(blob)
