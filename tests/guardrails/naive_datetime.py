# expect: ruff DTZ005
# mypy: ignore-errors
"""A naive local datetime: wrong by hours on a server in another zone, ambiguous at DST."""

from datetime import datetime


def stamp() -> str:
    """Return the current time as ISO 8601."""
    return datetime.now().isoformat()
