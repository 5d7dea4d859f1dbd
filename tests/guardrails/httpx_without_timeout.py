# expect: ruff S113
# mypy: ignore-errors
"""An HTTP client with timeouts switched off: one hung upstream holds a connection for good."""

import httpx


def create_client() -> httpx.AsyncClient:
    """Return a client for the rates service."""
    return httpx.AsyncClient(base_url="https://rates.example", timeout=None)
