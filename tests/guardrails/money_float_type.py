# expect: mypy arg-type
# mypy: ignore-errors
"""Money built from a float: mypy rejects it before the run-time check has to."""

from app.core.money import Money


def fee() -> Money:
    """Return the flat fee."""
    return Money(0.3, "EUR")
