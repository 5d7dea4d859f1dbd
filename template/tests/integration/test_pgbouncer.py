"""Behind PgBouncer in transaction mode (``APP_DB__PGBOUNCER=true``), through a real PgBouncer.

Runs when APP_TEST_PGBOUNCER_URL names the test database through PgBouncer (see
`pgbouncer_url`); skipped otherwise. In transaction mode consecutive transactions of one
client connection may run on different server connections, which is what breaks prepared
statements, session settings and session locks, so every test here runs many clients at
once.
"""

import asyncio
import re
import time
from collections import Counter
from collections.abc import AsyncIterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import exc, text
from sqlalchemy.ext.asyncio import AsyncEngine
from structlog.typing import EventDict

from app.core.config import Settings
from app.core.db import PoolerRefusedSettingError, create_engine
from app.main import create_app
from app.models import load_models
from tests.conftest import SettingsFactory
from tests.schema import VERSION_TABLE, database_state, downgrade, execute, script_heads, upgrade

CLIENTS = 48
_STATEMENT_NAME = re.compile(r'"__asyncpg_[^"]*__"')
ROUNDS = 20


@pytest.fixture
def through_pgbouncer(make_settings: SettingsFactory, pgbouncer_url: str) -> Settings:
    """Settings of a service behind PgBouncer: the URL through it, ``pgbouncer`` on."""
    return make_settings(db={"url": pgbouncer_url, "pgbouncer": True})


@pytest.fixture
async def engine(through_pgbouncer: Settings) -> AsyncIterator[AsyncEngine]:
    """The service's engine behind PgBouncer, disposed of afterwards."""
    created = create_engine(through_pgbouncer)
    yield created
    await created.dispose()


async def test_the_url_reaches_the_test_database_through_a_pooler(
    make_settings: SettingsFactory, pgbouncer_url: str, database_url: str
) -> None:
    """Without ``pgbouncer`` the connection is refused, with the setting to use in the error.

    PostgreSQL itself accepts the statement_timeout startup parameter; only a pooler
    refuses it, so this also shows that the URL really goes through one.
    """
    plain = create_engine(make_settings(db={"url": pgbouncer_url}))
    direct = create_engine(make_settings(db={"url": database_url}))
    behind = create_engine(make_settings(db={"url": pgbouncer_url, "pgbouncer": True}))
    try:
        with pytest.raises(PoolerRefusedSettingError, match="APP_DB__PGBOUNCER=true"):
            async with plain.connect():
                pass
        names = []
        for each in (direct, behind):
            async with each.connect() as connection:
                names.append((await connection.execute(text("SELECT current_database()"))).scalar())
    finally:
        for each in (plain, direct, behind):
            await each.dispose()

    assert names[0] == names[1]


def test_the_service_logs_the_setting_to_use(
    make_settings: SettingsFactory, pgbouncer_url: str, logs: list[EventDict]
) -> None:
    """Run without ``pgbouncer``, the service answers 503 and its log line names the fix.

    The line carries the error's type and fixed hint only, never the driver's message.
    """
    with TestClient(create_app(make_settings(db={"url": pgbouncer_url}))) as client:
        ready = client.get("/readyz")

    failed = [event for event in logs if event["event"] == "readiness.db_failed"]
    assert ready.status_code == 503
    assert ready.json()["error"]["code"] == "db_unavailable"
    assert [(event["error"], event["hint"]) for event in failed] == [
        ("PoolerRefusedSettingError", PoolerRefusedSettingError.hint)
    ]


async def _two_statements(
    engine: AsyncEngine, client: int, round_: int, *, autocommit: bool
) -> None:
    # Autocommit is the lean read's way: no transaction around the statements.
    options = {"isolation_level": "AUTOCOMMIT"} if autocommit else {}
    async with engine.connect() as opened:
        connection = await opened.execution_options(**options) if options else opened
        total = await connection.scalar(
            text("SELECT CAST(:a AS integer) + CAST(:b AS integer)"), {"a": client, "b": round_}
        )
        double = await connection.scalar(text("SELECT CAST(:a AS integer) * 2"), {"a": round_})
        if not autocommit:
            await connection.commit()
    assert (total, double) == (client + round_, 2 * round_)


# The default pings only connections idle 10 s; 0 pings at every checkout, so the
# pings themselves run through transaction pooling too.
@pytest.mark.parametrize("pre_ping_idle", [10.0, 0.0], ids=["idle-ping", "ping-every-checkout"])
async def test_many_clients_run_statements_in_and_out_of_transactions(
    make_settings: SettingsFactory, pgbouncer_url: str, pre_ping_idle: float
) -> None:
    """Parameterised statements from 48 clients at once, with and without a transaction.

    asyncpg prepares a statement once per connection and runs it again in later
    transactions; outside a transaction (autocommit, as the lean read runs) it even
    prepares and runs it in two exchanges. PgBouncer may send each to another server
    connection. Only PgBouncer's own tracking of prepared statements makes that work:
    ``max_prepared_statements`` above 0, in PgBouncer 1.21 or newer (0 by default before
    1.24). Without it most of these fail with "prepared statement ... does not exist".
    """
    engine = create_engine(
        make_settings(db={"url": pgbouncer_url, "pgbouncer": True, "pre_ping_idle": pre_ping_idle})
    )
    failures: Counter[str] = Counter()

    async def client(number: int) -> None:
        for round_ in range(ROUNDS):
            try:
                await _two_statements(engine, number, round_, autocommit=round_ % 2 == 0)
            except exc.DBAPIError as error:
                # One name per statement: count the kinds of failure, not the names.
                failures[_STATEMENT_NAME.sub('"<name>"', str(error.orig).splitlines()[0])] += 1

    try:
        async with asyncio.TaskGroup() as group:
            for number in range(CLIENTS):
                group.create_task(client(number))
    finally:
        await engine.dispose()

    assert not failures, (
        f"{failures.total()} of {CLIENTS * ROUNDS} failed through PgBouncer; autocommit "
        "statements need max_prepared_statements > 0 (PgBouncer 1.21 or newer): "
        f"{failures.most_common(3)}"
    )


async def test_a_query_the_driver_stops_is_cancelled_on_the_server(
    make_settings: SettingsFactory, pgbouncer_url: str, engine: AsyncEngine
) -> None:
    """The driver's own limit cancels the query in PostgreSQL too, through PgBouncer.

    Behind PgBouncer the service sends no statement_timeout; `command_timeout` stops the
    wait, and asyncpg's cancel request must reach the server through PgBouncer, or the
    server connection would stay busy for the whole query and be lost to the pool.
    """
    limited = create_engine(
        make_settings(db={"url": pgbouncer_url, "pgbouncer": True, "statement_timeout": 0.3})
    )
    started = time.monotonic()
    try:
        async with limited.connect() as connection:
            with pytest.raises(TimeoutError):
                await connection.execute(text("SELECT pg_sleep(30) /* keel-cancel-probe */"))
    finally:
        await limited.dispose()
    stopped = time.monotonic() - started

    running = -1
    for _ in range(50):
        async with engine.connect() as connection:
            running = await connection.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE state = 'active'"
                    " AND query LIKE '%keel-cancel-' || 'probe%'"
                )
            )
        if running == 0:
            break
        await asyncio.sleep(0.1)

    assert stopped < 3
    assert running == 0


def test_migrations_run_through_pgbouncer(
    through_pgbouncer: Settings, database_url: str, make_settings: SettingsFactory
) -> None:
    """The migration job's upgrade and a downgrade run through PgBouncer.

    Each runs in one transaction behind a transaction-level advisory lock, the kind that
    transaction pooling keeps; a session-level lock would be released, or kept, on a
    server connection another client then gets.
    """
    direct = make_settings(db={"url": database_url})
    tables = sorted(load_models().tables)  # the service's tables, as the models declare them
    execute(
        direct, *(f'DROP TABLE IF EXISTS "{name}" CASCADE' for name in [*tables, VERSION_TABLE])
    )
    try:
        upgrade(through_pgbouncer)
        migrated = database_state(direct)
        downgrade(through_pgbouncer, "base")
        emptied = database_state(direct)
    finally:
        execute(
            direct, *(f'DROP TABLE IF EXISTS "{name}" CASCADE' for name in [*tables, VERSION_TABLE])
        )

    assert migrated[0] == script_heads()
    assert set(tables) <= migrated[1]
    assert emptied == ((), {VERSION_TABLE})
