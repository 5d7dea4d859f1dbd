# expect: ruff RUF006
# mypy: ignore-errors
"""A task nobody keeps a reference to can be garbage-collected mid-flight; errors vanish."""

import asyncio


async def audit(event: str) -> None:
    """Record an audit event."""
    await asyncio.sleep(0)


async def handle(event: str) -> None:
    """Handle a request and audit it in the background."""
    asyncio.create_task(audit(event))
