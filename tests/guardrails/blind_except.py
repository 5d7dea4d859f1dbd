# expect: ruff BLE001
# mypy: ignore-errors
"""A blind except: a bug (TypeError, KeyError) is reported as "no data" and never seen."""


def load(raw: dict[str, str]) -> str | None:
    """Return the name, or None when anything goes wrong."""
    try:
        return raw["name"].strip()
    except Exception:
        return None
