import asyncio
import os
from collections.abc import AsyncIterator, Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import exc, text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.db import create_engine
from app.main import create_app
from tests.integration.conftest import PgSettings
from tests.integration.live import with_sleep_route


@pytest.fixture
async def engines() -> AsyncIterator[list[AsyncEngine]]:
    """Engines created by a test, disposed of afterwards."""
    created: list[AsyncEngine] = []
    yield created
    for engine in created:
        await engine.dispose()


async def _backend_pid(engine: AsyncEngine) -> int:
    async with engine.connect() as connection:
        return int((await connection.execute(text("SELECT pg_backend_pid()"))).scalar_one())


async def _terminate(engine: AsyncEngine, pid: int) -> None:
    async with engine.connect() as connection:
        await connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    await asyncio.sleep(0.2)  # the server needs a moment to drop the socket


@pytest.fixture
def sleep_client(pg_settings: PgSettings) -> Iterator[TestClient]:
    """A client for an app with a 0.3 s statement timeout and a route that sleeps in SQL."""
    app = with_sleep_route(create_app(pg_settings(statement_timeout=0.3)))
    with TestClient(app) as client:
        yield client


def test_readyz_ok_on_postgres(sleep_client: TestClient) -> None:
    """/readyz answers 200 when PostgreSQL answers."""
    assert sleep_client.get("/readyz").status_code == 200


def test_statement_timeout_answers_503(sleep_client: TestClient) -> None:
    """A statement over APP_DB__STATEMENT_TIMEOUT is stopped by the server: 503 timeout."""
    fast = sleep_client.get("/sleep", params={"seconds": 0})
    slow = sleep_client.get("/sleep", params={"seconds": 3})

    assert fast.status_code == 200
    assert slow.status_code == 503
    assert slow.json()["error"]["code"] == "timeout"


async def test_application_name_identifies_process(
    pg_settings: PgSettings, engines: list[AsyncEngine]
) -> None:
    """Connections carry `<service>-<pid>` as application_name."""
    engine = create_engine(pg_settings())
    engines.append(engine)

    async with engine.connect() as connection:
        name = (await connection.execute(text("SHOW application_name"))).scalar_one()

    assert name.endswith(f"-{os.getpid()}")


@pytest.mark.parametrize(
    "db", [{"pre_ping_idle": 0.1}, {"pre_ping_idle": 0}], ids=["idle-pre-ping", "pre-ping"]
)
async def test_pre_ping_replaces_connection_killed_while_idle(
    pg_settings: PgSettings, engines: list[AsyncEngine], db: dict[str, float]
) -> None:
    """A pooled connection killed by the server is replaced on checkout, without an error."""
    engine = create_engine(pg_settings(pool_size=1, max_overflow=0, **db))
    admin = create_engine(pg_settings())
    engines.extend([engine, admin])
    first_pid = await _backend_pid(engine)

    await _terminate(admin, first_pid)
    second_pid = await _backend_pid(engine)

    assert first_pid != second_pid


async def test_without_pre_ping_killed_connection_fails_once(
    pg_settings: PgSettings, engines: list[AsyncEngine]
) -> None:
    """Control: with pre-ping off the dead connection surfaces as one error, then recovers."""
    engine = create_engine(pg_settings(pool_size=1, max_overflow=0, pool_pre_ping=False))
    admin = create_engine(pg_settings())
    engines.extend([engine, admin])
    first_pid = await _backend_pid(engine)
    await _terminate(admin, first_pid)

    with pytest.raises(exc.DBAPIError) as caught:
        await _backend_pid(engine)
    recovered_pid = await _backend_pid(engine)

    assert caught.value.connection_invalidated
    assert recovered_pid != first_pid


async def test_pgbouncer_mode_runs_queries(
    pg_settings: PgSettings, engines: list[AsyncEngine]
) -> None:
    """PgBouncer mode runs parameterised queries straight against PostgreSQL too."""
    engine = create_engine(pg_settings(pgbouncer=True))
    engines.append(engine)

    async with engine.connect() as connection:
        values = [
            (await connection.execute(text("SELECT :n + 1"), {"n": n})).scalar_one()
            for n in range(3)
        ]

    assert values == [1, 2, 3]


async def test_pgbouncer_mode_sends_no_statement_timeout_but_still_bounds_queries(
    pg_settings: PgSettings, engines: list[AsyncEngine]
) -> None:
    """PgBouncer refuses a statement_timeout startup parameter; the driver's limit still holds.

    PostgreSQL itself would accept the parameter, so the test checks it was not sent: the
    session keeps the server's default while a longer query is still cut off.
    """
    engine = create_engine(pg_settings(pgbouncer=True, statement_timeout=0.2))
    engines.append(engine)

    async with engine.connect() as connection:
        server_limit = (await connection.execute(text("SHOW statement_timeout"))).scalar_one()
        name = (await connection.execute(text("SHOW application_name"))).scalar_one()
        with pytest.raises(TimeoutError):
            await connection.execute(text("SELECT pg_sleep(2)"))

    assert server_limit == "0"
    assert name.endswith(f"-{os.getpid()}")  # PgBouncer passes application_name through
