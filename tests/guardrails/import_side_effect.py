# expect: service-test tests/unit/test_import_side_effects.py APP_DB__URL
# mypy: ignore-errors
"""Config read at import time: importing the module (a test, a migration, a tool) needs the env."""

import os

DATABASE_URL = os.environ.get("APP_DB__URL", "sqlite+aiosqlite:///app.db")


def database_url() -> str:
    """Return the database URL."""
    return DATABASE_URL
