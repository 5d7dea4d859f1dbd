# expect: ruff PGH003
# expect: mypy ignore-without-code
# mypy: ignore-errors
"""A blanket `type: ignore` silences every error on the line, including the next real one."""


def port(raw: str) -> int:
    """Return the port number."""
    return raw  # type: ignore
