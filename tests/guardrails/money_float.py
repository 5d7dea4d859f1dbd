# expect: pytest money refuses float
# mypy: ignore-errors
"""Money from a float: 19.99 is 19.989999999999998436805981327779591083526611328125."""

from app.core.money import Money


def test_invoice_total() -> None:
    """Three items at 19.99 cost 59.97."""
    total = Money(19.99, "EUR") * 3

    assert total == Money("59.97", "EUR")
