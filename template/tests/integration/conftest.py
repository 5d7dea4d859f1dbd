"""Integration tier: real PostgreSQL, reached through APP_TEST_DATABASE_URL.

Every test in this directory is marked ``integration``. Without the variable they are
skipped locally, and fail in CI (``CI=true``), where a skip would hide a broken tier.
Run them with, for example::

    APP_TEST_DATABASE_URL=postgresql+asyncpg://postgres@127.0.0.1:5432/test uv run pytest
"""

import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.config import Settings
from app.core.db import create_engine
from tests.conftest import SettingsFactory
from tests.integration.live import observer_engine

HERE = Path(__file__).parent
URL_VARIABLE = "APP_TEST_DATABASE_URL"

type PgSettings = Callable[..., Settings]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test collected from this directory as ``integration``."""
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def database_url() -> str:
    """The PostgreSQL URL to test against; skips (locally) or fails (CI) when unset."""
    url = os.environ.get(URL_VARIABLE, "")
    if url:
        return url
    message = (
        f"{URL_VARIABLE} is not set; start PostgreSQL and run e.g. "
        f"{URL_VARIABLE}=postgresql+asyncpg://postgres@127.0.0.1:5432/test uv run pytest"
    )
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail(f"integration tests must run in CI: {message}")
    pytest.skip(message)


@pytest.fixture(autouse=True)
def _require_database(database_url: str) -> None:
    """Apply the skip/fail rule to every test here, even those not using the URL."""


@pytest.fixture
def pg_settings(make_settings: SettingsFactory, database_url: str) -> PgSettings:
    """Settings pointing at the test PostgreSQL; keywords override ``db`` fields."""

    def make(**db: Any) -> Settings:
        return make_settings(db={"url": database_url, **db})

    create_engine(make())  # loads the asyncpg dialect before the loop guard watches
    return make


@pytest.fixture
async def observer(database_url: str) -> AsyncIterator[AsyncEngine]:
    """The test's own engine, to count and kill the service's connections."""
    engine = observer_engine(database_url)
    yield engine
    await engine.dispose()
