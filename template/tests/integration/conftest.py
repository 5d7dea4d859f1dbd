"""Integration tier: real PostgreSQL, reached through APP_TEST_DATABASE_URL.

Every test in this directory is marked ``integration``. Without the variable they are
skipped locally, and fail in CI (``CI=true``), where a skip would hide a broken tier.
Run them with, for example::

    APP_TEST_DATABASE_URL=postgresql+asyncpg://postgres@127.0.0.1:5432/test uv run pytest
"""

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.config import Settings
from app.core.db import create_engine
from tests.conftest import SettingsFactory
from tests.integration.live import (
    observer_engine,
    service_connections,
    terminate_service_connections,
)

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


PGBOUNCER_VARIABLE = "APP_TEST_PGBOUNCER_URL"


@pytest.fixture(scope="session")
def _pgbouncer_setting(database_url: str) -> str:
    url = os.environ.get(PGBOUNCER_VARIABLE, "")
    if not url:
        pytest.skip(
            f"{PGBOUNCER_VARIABLE} is not set; set it to the test database's URL through "
            "PgBouncer (transaction mode) to test APP_DB__PGBOUNCER=true"
        )
    return url


@pytest.fixture
async def pgbouncer_url(_pgbouncer_setting: str, observer: AsyncEngine) -> AsyncIterator[str]:
    """The test database reached through PgBouncer in transaction mode; skips when unset.

    Optional even in CI: only services deployed behind PgBouncer need it. It must name
    the same database as APP_TEST_DATABASE_URL, through PgBouncer 1.21 or newer with
    ``pool_mode = transaction`` and ``max_prepared_statements`` above 0.

    PgBouncer keeps its server connections after the test, under this process's
    ``application_name``; they are closed afterwards, so that the pool tests, which
    count the service's connections, count none of them.
    """
    yield _pgbouncer_setting
    await terminate_service_connections(observer)
    for _ in range(100):
        if await service_connections(observer) == 0:
            return
        await asyncio.sleep(0.05)
    pytest.fail("PgBouncer's server connections outlived pg_terminate_backend for 5 s")


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
