# expect: ruff B019
# mypy: ignore-errors
"""lru_cache on a method keeps every `self` alive forever (and caches across instances)."""

import functools


class Prices:
    """Price lookups."""

    @functools.lru_cache(maxsize=1024)
    def price(self, sku: str) -> int:
        """Return the price of `sku` in cents."""
        return len(sku) * 100
