# expect: ruff RUF012
# mypy: ignore-errors
"""A mutable class attribute is shared by every instance: one request's data leaks into the next."""


class Basket:
    """A shopping basket."""

    items: list[str] = []

    def add(self, item: str) -> None:
        """Add `item`."""
        self.items.append(item)
