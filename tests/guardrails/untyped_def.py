# expect: mypy no-untyped-def
# mypy: ignore-errors
"""An unannotated function: mypy cannot check its callers, so `total("3", 4)` slips through."""


def total(price, quantity):
    """Return the line total."""
    return price * quantity
