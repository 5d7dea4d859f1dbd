# expect: ruff T201
# mypy: ignore-errors
"""print() bypasses the structured log pipeline: no level, no request id, no redaction."""


def charge(order_id: str, amount: int) -> None:
    """Charge an order."""
    print("charging", order_id, amount)
