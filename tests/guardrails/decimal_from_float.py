# expect: ruff RUF032
# mypy: ignore-errors
"""Decimal built from a float literal keeps the float's error: 0.1000000000000000055511..."""

from decimal import Decimal

VAT = Decimal(0.19)
