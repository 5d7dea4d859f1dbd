# expect: ruff TID251
# expect-message: app.core.concurrency
# mypy: ignore-errors
"""asyncio.gather: when one call fails the others keep running, unowned and unawaited."""

import asyncio
from collections.abc import Awaitable


async def fan_out(calls: list[Awaitable[int]]) -> list[int]:
    """Run the calls concurrently."""
    return await asyncio.gather(*calls)
