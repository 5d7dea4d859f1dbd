# expect: ruff S113 TID251
# expect-message: app.core.http
# mypy: ignore-errors
"""Sync `requests` with no timeout: a hung upstream holds the worker (and its loop) forever."""

import requests


def fetch_rates(url: str) -> bytes:
    """Return the raw rates document."""
    return requests.get(url).content
