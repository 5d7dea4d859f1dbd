# expect: ruff G004
# mypy: ignore-errors
"""An f-string log message: formatted even when the level is off, and unsearchable."""

import logging

logger = logging.getLogger(__name__)


def charged(order_id: str) -> None:
    """Log a charge."""
    logger.info(f"charged order {order_id}")
