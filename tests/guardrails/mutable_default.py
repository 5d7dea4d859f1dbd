# expect: ruff B006
# mypy: ignore-errors
"""A mutable default argument: every call without `tags` appends to the same list."""


def tag(name: str, tags: list[str] = []) -> list[str]:
    """Return `tags` with `name` added."""
    tags.append(name)
    return tags
