# expect: ruff E722
# mypy: ignore-errors
"""A bare except: it swallows KeyboardInterrupt, SystemExit and cancellation too."""


def parse_port(raw: str) -> int:
    """Return the port, or 8000 when `raw` is not a number."""
    try:
        return int(raw)
    except:
        return 8000
