"""The service's own name and version, read from its installed distribution metadata."""

import functools
from importlib import metadata

# The console script declared in pyproject.toml; it identifies our distribution whatever the
# project was named when it was rendered (the import package is always `app`).
_ENTRY_POINT = "app.__main__:main"


@functools.cache
def _distribution() -> metadata.Distribution | None:
    for entry_point in metadata.entry_points(group="console_scripts"):
        if entry_point.value == _ENTRY_POINT and entry_point.dist is not None:
            return entry_point.dist
    return None


def service_name() -> str:
    """Return the distribution name (``billing-api``), or ``app`` when it is not installed.

    Returns:
        The name used in the OpenAPI title, the PostgreSQL application_name and User-Agent.
    """
    dist = _distribution()
    return dist.metadata["Name"] if dist is not None else "app"


def service_version() -> str:
    """Return the installed version, or ``0.0.0`` when the project is not installed.

    Returns:
        The version string from the distribution metadata.
    """
    dist = _distribution()
    return dist.version if dist is not None else "0.0.0"
