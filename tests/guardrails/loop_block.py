# expect: pytest event loop blocked
# mypy: ignore-errors
"""A sync call inside a coroutine (here time.sleep, in real life a sync driver or requests)."""

import time


async def build_report() -> str:
    """Build the report; the sleep stands in for a blocking library call."""
    time.sleep(0.3)
    return "report"


async def test_report_is_built() -> None:
    """The report is built."""
    assert await build_report() == "report"
