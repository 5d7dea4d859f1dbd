"""Test helpers for migrations: run Alembic commands and read the schema they produced."""

import asyncio
from collections.abc import Callable
from typing import Any, Concatenate

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, MetaData, inspect, text

from app.core.config import Settings
from app.core.db import create_engine
from app.migrate import comparison_options, migration_config

VERSION_TABLE = "alembic_version"


def upgrade(settings: Settings, revision: str = "head") -> None:
    """Run ``upgrade`` to ``revision`` exactly as ``python -m app.migrate`` would.

    Alembic's env.py runs its own event loop: call this from synchronous tests only.
    """
    command.upgrade(migration_config(settings), revision)


def downgrade(settings: Settings, revision: str = "base") -> None:
    """Run ``downgrade`` to ``revision`` (synchronous tests only, like `upgrade`)."""
    command.downgrade(migration_config(settings), revision)


def check(settings: Settings) -> None:
    """Run ``alembic check``: raises when autogenerate would write a new revision."""
    command.check(migration_config(settings))


def script_heads() -> tuple[str, ...]:
    """Return the head revisions of the migration scripts shipped in the package."""
    return tuple(ScriptDirectory.from_config(migration_config()).get_heads())


def _state(connection: Connection) -> tuple[tuple[str, ...], set[str]]:
    heads = MigrationContext.configure(connection).get_current_heads()
    return heads, set(inspect(connection).get_table_names())


def _diff(connection: Connection, metadata: MetaData) -> list[Any]:
    # The options env.py passes to context.configure, so both compare the same way.
    options = comparison_options(connection.dialect.name)
    context = MigrationContext.configure(connection, opts=dict(options))
    return list(compare_metadata(context, metadata))


def _execute(connection: Connection, statements: tuple[str, ...]) -> None:
    for statement in statements:
        connection.execute(text(statement))
    connection.commit()


async def _run[**P, T](
    settings: Settings,
    work: Callable[Concatenate[Connection, P], T],
    *args: P.args,
    **kwargs: P.kwargs,
) -> T:
    engine = create_engine(settings)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(work, *args, **kwargs)
    finally:
        await engine.dispose()


def execute(settings: Settings, *statements: str) -> None:
    """Run SQL ``statements`` in one committed transaction."""
    asyncio.run(_run(settings, _execute, statements))


def database_state(settings: Settings) -> tuple[tuple[str, ...], set[str]]:
    """Return the revisions the database is at and the names of its tables."""
    return asyncio.run(_run(settings, _state))


def schema_diff(settings: Settings, metadata: MetaData) -> list[Any]:
    """Return autogenerate's differences between the database and ``metadata`` (empty: none)."""
    return asyncio.run(_run(settings, _diff, metadata))
