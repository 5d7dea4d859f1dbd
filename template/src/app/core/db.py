"""Database access: the pooled async engine, sessions, the unit of work and the ORM base."""

import asyncio
import functools
import os
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type information
from sqlalchemy import MetaData, event, exc, text
from sqlalchemy.engine import make_url
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.ext.asyncio import create_async_engine as _create_async_engine
from sqlalchemy.orm import DeclarativeBase, RelationshipProperty
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection

from app.core.config import DatabaseSettings, Settings
from app.core.meta import service_name

# Key in a pool entry's `info` dict: when the connection was last handed out by the pool.
_CHECKED_OUT_AT = "app.checked_out_at"

# Constraint names that Alembic autogenerate can diff and drop reliably.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base for ORM models.

    Relationships default to ``lazy="raise"``: a relationship declared without an
    explicit ``lazy=`` gets "raise" instead of SQLAlchemy's "select". Reading a
    relationship that was not loaded then raises ``InvalidRequestError`` at once,
    where the implicit query would otherwise cause an N+1 storm or, under asyncio,
    a ``MissingGreenlet`` error. Load what a query needs with ``selectinload()`` or
    ``joinedload()``, or declare an eager strategy (``lazy="selectin"``) on purpose.
    Only relationships assigned in the class body are covered; declare both sides
    with ``back_populates`` rather than ``backref``.
    """

    metadata = MetaData(naming_convention=NAMING_CONVENTION)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # Runs before DeclarativeBase maps the class, so the mapper sees the new strategy.
        # `strategy_key` is derived from `lazy` in __init__; SQLAlchemy's own declarative
        # scan updates both the same way for write_only/dynamic relationships.
        for attribute in vars(cls).values():
            if isinstance(attribute, RelationshipProperty) and attribute.lazy == "select":
                attribute.lazy = "raise"
                attribute.strategy_key = (("lazy", "raise"),)
        super().__init_subclass__(**kwargs)


class DatabaseConnectTimeoutError(ConnectionError, TimeoutError):
    """Opening a database connection took longer than ``APP_DB__CONNECT_TIMEOUT``.

    asyncpg raises a bare `TimeoutError`, indistinguishable from any other timeout;
    this one says the database is unreachable, so callers (and the 503 handler) treat
    it like a refused connection.
    """


def application_name() -> str:
    """Return this process's PostgreSQL ``application_name``: ``<service>-<pid>``.

    ``pg_stat_activity`` then shows which process holds which connection.

    Returns:
        At most 63 bytes, PostgreSQL's limit; the pid tells replicas and workers apart.
    """
    return f"{service_name()[:48]}-{os.getpid()}"


class PoolerRefusedSettingError(ConnectionError):
    """A connection pooler (PgBouncer) refused a setting the service sends at connect time.

    PgBouncer answers ``unsupported startup parameter: statement_timeout`` to every
    connection of a service configured for PostgreSQL itself; the message and `hint`
    name the setting that fixes it. It is a `ConnectionError`, so requests get 503.
    """

    hint = "the database URL points at a pooler such as PgBouncer: set APP_DB__PGBOUNCER=true"


def failure_fields(error: BaseException) -> dict[str, str]:
    """Return what a log line may say about a database failure.

    Driver messages may quote connection details, so a line gets the error's type and,
    for errors that carry one, their fixed ``hint``, never the message.

    Args:
        error: The failure.

    Returns:
        ``error`` (the type's name), and ``hint`` when the type has one.
    """
    fields = {"error": type(error).__name__}
    hint = getattr(error, "hint", None)
    if isinstance(hint, str):
        fields["hint"] = hint
    return fields


# PgBouncer's wording; PostgreSQL itself accepts any run-time parameter at startup.
_POOLER_REFUSAL = "unsupported startup parameter"


async def _connect_asyncpg(*args: Any, connect_timeout: float, **kwargs: Any) -> Any:
    try:
        return await asyncpg.connect(*args, **kwargs)
    except TimeoutError as error:
        # Within asyncpg.connect a TimeoutError is its own connect timeout: an outer
        # deadline (asyncio.timeout) cancels instead and raises only where it ends.
        message = f"no answer from the database within {connect_timeout:g} s"
        raise DatabaseConnectTimeoutError(message) from error
    except asyncpg.ProtocolViolationError as error:
        if not str(error).startswith(_POOLER_REFUSAL):
            raise
        message = f"the database answered {str(error)!r}: {PoolerRefusedSettingError.hint}"
        raise PoolerRefusedSettingError(message) from error


# Seconds to wait for a failed SQLite connection's worker thread to stop; it has nothing to
# do but return, so this bounds a stuck thread rather than a normal stop.
_WORKER_STOP_TIMEOUT = 5.0


async def _connect_aiosqlite(*args: Any, **kwargs: Any) -> Any:
    import aiosqlite  # noqa: PLC0415 -- only services on SQLite load the driver

    connection = aiosqlite.connect(*args, **kwargs)
    # aiosqlite runs each connection in a thread of its own; as SQLAlchemy's default
    # creator does, make it a daemon so that it never holds up the interpreter's exit.
    worker: threading.Thread = connection._thread
    worker.daemon = True
    try:
        return await connection
    except BaseException:
        # A failed open (a directory that does not exist, a read-only file) leaves the
        # worker thread one queued step, stopping, whose result it hands to this loop. Wait
        # for it here: once the loop has closed, that hand-off raises in the thread and
        # prints a traceback past the JSON logs (aiosqlite issue 241). Polled, not joined,
        # so that no executor thread is started for it.
        give_up = time.monotonic() + _WORKER_STOP_TIMEOUT
        while worker.is_alive() and time.monotonic() < give_up:  # noqa: ASYNC110 -- a thread, no event
            await asyncio.sleep(0.001)
        raise


def _postgres_connect_args(db: DatabaseSettings) -> dict[str, Any]:
    server_settings = {"application_name": application_name()}
    # The client-side limit backs up the server-side one (a stalled network never answers);
    # the margin lets PostgreSQL's cleaner error win when both apply.
    command_timeout = db.statement_timeout + 1.0 if db.statement_timeout else None
    if db.pgbouncer:
        # PgBouncer refuses startup parameters it cannot track ("unsupported startup
        # parameter: statement_timeout"), and ignoring it there would drop the limit. Set
        # the server-side limit on the role (ALTER ROLE ... SET statement_timeout); the
        # driver's own limit, without a margin, still stops a runaway query here.
        command_timeout = db.statement_timeout or None
    else:
        server_settings["statement_timeout"] = str(int(db.statement_timeout * 1000))
    args: dict[str, Any] = {
        "timeout": db.connect_timeout,
        "command_timeout": command_timeout,
        "server_settings": server_settings,
        # SQLAlchemy's asyncpg adapter opens connections through this coroutine.
        "async_creator_fn": functools.partial(_connect_asyncpg, connect_timeout=db.connect_timeout),
    }
    # Behind PgBouncer the statement caches stay on. Transaction pooling hands each
    # transaction to any server connection, and PgBouncer 1.21+ (max_prepared_statements
    # above 0, which the docs require) prepares a client's named statements again on
    # whichever one it gets. Switching the caches off instead, as advice for older
    # PgBouncers has it, cost 30 to 80 % more CPU per read and still failed there.
    return args


def _pool_args(db: DatabaseSettings) -> dict[str, Any]:
    # Behind PgBouncer in transaction mode the pool holds client connections to PgBouncer,
    # which hold no server connection between transactions. Keeping them bounds what the
    # service opens and saves a connect per request: without a pool, a read through
    # PgBouncer cost about three times the CPU (asyncpg sets up every new connection).
    return {
        "pool_size": db.pool_size,
        "max_overflow": db.max_overflow,
        "pool_timeout": db.pool_timeout,
        "pool_recycle": db.pool_recycle,
        "pool_pre_ping": db.pool_pre_ping and db.pre_ping_idle == 0,
    }


def create_engine(settings: Settings) -> AsyncEngine:
    """Build the pooled async engine described by ``settings.db``; no connection is opened.

    Args:
        settings: Supplies the URL, pool sizes and timeouts.

    Returns:
        An `AsyncEngine`; dispose of it with ``await engine.dispose()`` at shutdown.
    """
    db = settings.db
    url = make_url(db.url.get_secret_value())
    connect_args: dict[str, Any] = {}
    if url.get_backend_name() == "postgresql":
        connect_args = _postgres_connect_args(db)
    elif url.get_driver_name() == "aiosqlite":
        connect_args = {"async_creator_fn": _connect_aiosqlite}
    engine = _create_async_engine(
        url,
        connect_args=connect_args,
        # Bound parameters (passwords, personal data) stay out of exception messages and logs.
        hide_parameters=True,
        **_pool_args(db),
    )
    if db.pool_pre_ping and db.pre_ping_idle > 0:
        install_idle_pre_ping(engine, idle_seconds=db.pre_ping_idle)
    return engine


def driver_connection_closed(dbapi: DBAPIConnection) -> bool:
    """Tell, without I/O, whether the driver already knows the connection is closed.

    asyncpg connections answer through ``is_closed()``; drivers without such a check
    (aiosqlite) count as open.

    Args:
        dbapi: The pooled DBAPI connection (SQLAlchemy's adapter around the driver's).

    Returns:
        True when the connection can no longer be used.
    """
    is_closed = getattr(getattr(dbapi, "driver_connection", None), "is_closed", None)
    return bool(is_closed()) if callable(is_closed) else False


def install_idle_pre_ping(engine: AsyncEngine, *, idle_seconds: float) -> None:
    """Check pooled connections on checkout; ping only those idle for ``idle_seconds``.

    SQLAlchemy's ``pool_pre_ping`` costs one round trip per checkout (about a fifth of
    the throughput of a one-row read). This keeps its safety for less:

    - Every checkout first asks the driver whether the connection is already closed, a
      check without any I/O. When PostgreSQL restarts or a backend is terminated, the
      server closes the socket; the event loop sees that while the connection sits in
      the pool, and asyncpg marks it closed. Such a connection is never handed out.
    - A connection whose previous checkout began ``idle_seconds`` or longer ago is also
      pinged: firewalls and NAT gateways drop idle connections without closing them,
      which only a round trip can find out. Counting from the previous checkout rather
      than from the checkin needs one listener instead of two (no work at all when a
      connection goes back); a connection held for long and returned just now gets a
      ping it did not strictly need, and one idle for ``idle_seconds`` never misses one.

    Either failure raises `DisconnectionError`, so the pool drops every connection older
    than now and retries the checkout with a fresh one, as ``pool_pre_ping`` does. Left
    uncovered: a connection silently cut off within ``idle_seconds`` of its last use
    fails its next statement (SQLAlchemy's optimistic handling then invalidates the pool);
    a ping would have waited for a timeout on it too.

    Args:
        engine: The engine whose pool gets the checkout listener.
        idle_seconds: Minimum time since the previous checkout, in seconds, before a ping.
    """
    dialect = engine.sync_engine.dialect

    def on_checkout(
        dbapi: DBAPIConnection, record: ConnectionPoolEntry, _proxy: PoolProxiedConnection
    ) -> None:
        if driver_connection_closed(dbapi):
            raise exc.InvalidatePoolError("the server closed this pooled connection")
        now = time.monotonic()
        # `info` lives as long as the DBAPI connection: a new connection starts empty.
        previous = record.info.get(_CHECKED_OUT_AT)
        record.info[_CHECKED_OUT_AT] = now
        if previous is None or now - previous < idle_seconds:
            return
        try:
            dialect.do_ping(dbapi)
        except dialect.loaded_dbapi.Error as error:
            if dialect.is_disconnect(error, dbapi, None):
                raise exc.InvalidatePoolError from error
            raise

    event.listen(engine.sync_engine.pool, "checkout", on_checkout)


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Build the session factory; objects stay readable after commit (no implicit reload).

    Args:
        engine: The engine sessions connect through.

    Returns:
        A factory producing one `AsyncSession` per request or task, never shared.
    """
    return async_sessionmaker(engine, expire_on_commit=False)


@asynccontextmanager
async def unit_of_work(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> AsyncIterator[AsyncSession]:
    """Run a block in one transaction: commit when it ends, roll back when it raises.

    Args:
        sessionmaker: The factory from `create_sessionmaker`.

    Yields:
        A session inside an open transaction.
    """
    async with sessionmaker() as session, session.begin():
        yield session


async def ping(engine: AsyncEngine) -> None:
    """Run ``SELECT 1``, connecting if needed; bound it with `app.core.concurrency.deadline`.

    Args:
        engine: The engine to check.

    Raises:
        sqlalchemy.exc.SQLAlchemyError: The database refused or failed the query.
        OSError: The network refused the connection.
    """
    async with engine.connect() as connection:
        await connection.execute(text("SELECT 1"))
