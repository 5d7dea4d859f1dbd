"""Alembic environment: migrations run through the service's own settings and engine.

Alembic executes this file for every command; run them with ``python -m app.migrate``.

- The database is ``settings.db`` (``APP_DB__URL`` ...): the settings passed by
  `app.migrate.migration_config`, or loaded from the environment as the service does.
  The engine comes from `app.core.db.create_engine`, so migrations get the same
  connect timeout, statement timeout and ``application_name`` as the service.
- The target is ``Base.metadata`` with every model module imported (`app.models`),
  so autogenerate and the drift test see every table.
- Comparisons (autogenerate, ``check``) use `app.migrate.comparison_options`: column
  types are compared, and SQLite gets batch mode.
- On PostgreSQL the whole upgrade runs in one transaction that first takes an advisory
  lock, so two deploy jobs started at once migrate one after the other, never together.
- New revisions are numbered in sequence (0001, 0002, ...) unless ``--rev-id`` is given.
"""

import asyncio
from collections.abc import Iterable

from alembic import context
from alembic.operations.ops import MigrationScript
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, MetaData, text
from sqlalchemy.engine import URL, make_url

from app.__main__ import load_settings_or_exit
from app.core.config import Settings
from app.core.db import create_engine
from app.migrate import MIGRATION_LOCK_ID, SETTINGS_KEY, comparison_options
from app.models import load_models

# Key of `Config.attributes` for an open sync connection to migrate through (tests, or code
# that already holds one, via `AsyncConnection.run_sync`).
CONNECTION_KEY = "connection"


def _settings() -> Settings:
    settings = context.config.attributes.get(SETTINGS_KEY)
    if isinstance(settings, Settings):
        return settings
    return load_settings_or_exit()


def _number_revision(
    migration_context: MigrationContext, _revision: object, directives: list[MigrationScript]
) -> None:
    """Give a new revision the next four-digit number unless its id was chosen with --rev-id."""
    # `alembic revision` hands its arguments to env.py through the context options; the id
    # alembic generates otherwise is random hex, which is sometimes all digits, so the id
    # itself cannot tell whether the user chose it.
    revision_context = migration_context.opts.get("revision_context")
    if revision_context is not None and revision_context.command_args.get("rev_id"):
        return
    script = directives[0]
    revisions: Iterable[str] = (found.revision for found in context.script.walk_revisions())
    numbers = [int(revision) for revision in revisions if revision.isdigit()]
    script.rev_id = f"{max(numbers, default=0) + 1:04d}"


def _configure(
    metadata: MetaData,
    *,
    backend: str,
    connection: Connection | None = None,
    url: URL | None = None,
) -> None:
    offline = connection is None
    context.configure(
        connection=connection,
        url=url,
        target_metadata=metadata,
        **comparison_options(backend),
        # Offline (`--sql`) output is SQL text for a DBA to review or run: values inlined.
        literal_binds=offline,
        dialect_opts={"paramstyle": "named"} if offline else None,
        process_revision_directives=_number_revision,
    )


def _migrate(connection: Connection, metadata: MetaData) -> None:
    _configure(metadata, backend=connection.dialect.name, connection=connection)
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": MIGRATION_LOCK_ID})
        context.run_migrations()


async def _migrate_online(settings: Settings, metadata: MetaData) -> None:
    engine = create_engine(settings)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_migrate, metadata)
    finally:
        await engine.dispose()


def _migrate_offline(settings: Settings, metadata: MetaData) -> None:
    url = make_url(settings.db.url.get_secret_value())
    _configure(metadata, backend=url.get_backend_name(), url=url)
    with context.begin_transaction():
        context.run_migrations()


def run() -> None:
    """Run the current Alembic command: offline, on a given connection, or on a new engine."""
    metadata = load_models()
    connection = context.config.attributes.get(CONNECTION_KEY)
    if isinstance(connection, Connection):
        _migrate(connection, metadata)
    elif context.is_offline_mode():
        _migrate_offline(_settings(), metadata)
    else:
        asyncio.run(_migrate_online(_settings(), metadata))


run()
