# expect: ruff ASYNC251 ASYNC210
# mypy: ignore-errors
"""Blocking calls inside a coroutine stop every other request on the event loop."""

import time

import httpx


async def poll(url: str) -> int:
    """Wait a second, then return the status of `url`."""
    time.sleep(1)
    return httpx.get(url, timeout=5).status_code
