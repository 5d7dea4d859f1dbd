import asyncio
import os
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import ForeignKey, MetaData, event, exc, select, text
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import Mapped, mapped_column, relationship, selectinload
from sqlalchemy.pool import AsyncAdaptedQueuePool

from app.core.concurrency import deadline
from app.core.config import Settings
from app.core.db import (
    Base,
    create_engine,
    create_sessionmaker,
    driver_connection_closed,
    ping,
    unit_of_work,
)
from tests.conftest import SettingsFactory
from tests.helpers import unreachable_postgres_url


class ModelBase(Base):
    """Models of this module only, on their own metadata."""

    __abstract__ = True
    metadata = MetaData()


class Author(ModelBase):
    """An author with books (relationship declared without `lazy`)."""

    __tablename__ = "author"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]
    books: Mapped[list["Book"]] = relationship(back_populates="author")


class Book(ModelBase):
    """A book; its author relationship is eager on purpose."""

    __tablename__ = "book"
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str]
    author_id: Mapped[int] = mapped_column(ForeignKey("author.id"))
    author: Mapped[Author] = relationship(back_populates="books", lazy="selectin")


def _checked_out(engine: AsyncEngine) -> int:
    pool = engine.pool
    assert isinstance(pool, AsyncAdaptedQueuePool)
    return pool.checkedout()


@pytest.fixture
async def engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    """An engine on the test SQLite file, with this module's tables created."""
    created = create_engine(settings)
    async with created.begin() as connection:
        await connection.run_sync(ModelBase.metadata.create_all)
    yield created
    await created.dispose()


@pytest.fixture(autouse=True)
def _warm_imports(make_settings: SettingsFactory) -> None:
    """Load the asyncpg dialect and distribution metadata before the loop guard watches."""
    create_engine(make_settings(db={"url": unreachable_postgres_url()}))


class ConnectArgsCaptured(Exception):  # noqa: N818 -- a control-flow signal, not an error
    """Raised from do_connect once the driver arguments are captured."""


def _driver_kwargs(engine: AsyncEngine) -> dict[str, Any]:
    """Return the keyword arguments the engine would pass to asyncpg.connect."""
    captured: dict[str, Any] = {}

    def capture(_dialect: Any, _record: Any, _args: Any, kwargs: dict[str, Any]) -> None:
        captured.update(kwargs)
        raise ConnectArgsCaptured

    event.listen(engine.sync_engine, "do_connect", capture)
    return captured


async def _connect_args(settings: Settings) -> dict[str, Any]:
    engine = create_engine(settings)
    captured = _driver_kwargs(engine)
    with pytest.raises(ConnectArgsCaptured):
        async with engine.connect():
            pass
    await engine.dispose()
    return captured


async def test_postgres_driver_gets_timeouts_and_application_name(
    make_settings: SettingsFactory,
) -> None:
    """The asyncpg driver receives the connect timeout, statement timeout and a per-process name."""
    settings = make_settings(
        db={"url": unreachable_postgres_url(), "connect_timeout": 3, "statement_timeout": 2.5}
    )

    kwargs = await _connect_args(settings)

    assert kwargs["timeout"] == 3
    assert kwargs["command_timeout"] == 3.5
    assert kwargs["server_settings"]["statement_timeout"] == "2500"
    assert kwargs["server_settings"]["application_name"].endswith(f"-{os.getpid()}")
    assert "statement_cache_size" not in kwargs


async def test_postgres_statement_timeout_zero_disables(make_settings: SettingsFactory) -> None:
    """A statement timeout of 0 sets no server or client limit."""
    settings = make_settings(db={"url": unreachable_postgres_url(), "statement_timeout": 0})

    kwargs = await _connect_args(settings)

    assert kwargs["command_timeout"] is None
    assert kwargs["server_settings"]["statement_timeout"] == "0"


async def test_pgbouncer_mode_keeps_the_pool_and_the_statement_caches(
    make_settings: SettingsFactory,
) -> None:
    """Behind PgBouncer 1.21+ the pool and asyncpg's statement caches stay as they are."""
    settings = make_settings(
        db={"url": unreachable_postgres_url(), "pgbouncer": True, "pool_size": 3}
    )

    kwargs = await _connect_args(settings)
    engine = create_engine(settings)

    assert isinstance(engine.pool, AsyncAdaptedQueuePool)
    assert engine.pool.size() == 3
    assert not {"statement_cache_size", "prepared_statement_cache_size"} & set(kwargs)
    assert "statement_timeout" not in kwargs["server_settings"]
    await engine.dispose()


async def test_pool_limits_and_timeout(make_settings: SettingsFactory) -> None:
    """pool_size + max_overflow connections are handed out; the next waits pool_timeout."""
    engine = create_engine(
        make_settings(db={"pool_size": 1, "max_overflow": 1, "pool_timeout": 0.2})
    )

    async with engine.connect(), engine.connect():
        with pytest.raises(exc.TimeoutError):
            async with engine.connect():
                pass

    assert _checked_out(engine) == 0
    await engine.dispose()


async def test_unit_of_work_commits(engine: AsyncEngine) -> None:
    """Leaving the block normally commits."""
    sessionmaker = create_sessionmaker(engine)

    async with unit_of_work(sessionmaker) as session:
        session.add(Author(name="Ann"))

    async with sessionmaker() as session:
        assert (await session.scalars(select(Author.name))).all() == ["Ann"]


async def test_unit_of_work_rolls_back_on_error(engine: AsyncEngine) -> None:
    """An exception inside the block rolls everything back and propagates."""
    sessionmaker = create_sessionmaker(engine)

    async def add_then_fail() -> None:
        async with unit_of_work(sessionmaker) as session:
            session.add(Author(name="Ann"))
            await session.flush()
            raise RuntimeError("abort")

    with pytest.raises(RuntimeError, match="abort"):
        await add_then_fail()

    async with sessionmaker() as session:
        assert (await session.scalars(select(Author))).all() == []


async def test_objects_readable_after_commit(engine: AsyncEngine) -> None:
    """expire_on_commit=False: attributes stay loaded, no implicit I/O after commit."""
    sessionmaker = create_sessionmaker(engine)

    async with unit_of_work(sessionmaker) as session:
        author = Author(name="Ann")
        session.add(author)

    assert author.name == "Ann"


async def test_relationship_defaults_to_raise(engine: AsyncEngine) -> None:
    """An unloaded relationship declared without `lazy` raises instead of querying."""
    sessionmaker = create_sessionmaker(engine)
    async with unit_of_work(sessionmaker) as session:
        session.add(Author(name="Ann", books=[Book(title="One")]))

    async with sessionmaker() as session:
        author = (await session.scalars(select(Author))).one()
        with pytest.raises(exc.InvalidRequestError, match="lazy='raise'"):
            _ = author.books


async def test_relationship_eager_loading_works(engine: AsyncEngine) -> None:
    """selectinload() loads the relationship; an explicit lazy= strategy is kept."""
    sessionmaker = create_sessionmaker(engine)
    async with unit_of_work(sessionmaker) as session:
        session.add(Author(name="Ann", books=[Book(title="One"), Book(title="Two")]))

    async with sessionmaker() as session:
        author = (await session.scalars(select(Author).options(selectinload(Author.books)))).one()
        book = (await session.scalars(select(Book).limit(1))).one()

    assert sorted(b.title for b in author.books) == ["One", "Two"]
    assert book.author.name == "Ann"
    assert Book.author.property.lazy == "selectin"
    assert Author.books.property.lazy == "raise"


async def test_ping_succeeds_on_sqlite(engine: AsyncEngine) -> None:
    """A ping returns when the database answers."""
    await ping(engine)

    assert _checked_out(engine) == 0


async def test_ping_fails_fast_when_unreachable(make_settings: SettingsFactory) -> None:
    """A ping against a refused port raises quickly instead of hanging."""
    engine = create_engine(make_settings(db={"url": unreachable_postgres_url()}))

    with pytest.raises(OSError, match="Connect call failed"):
        async with deadline(2):
            await ping(engine)

    await engine.dispose()


class PingCounter:
    """Wraps the dialect's real do_ping and counts the calls."""

    def __init__(self, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        dialect = engine.sync_engine.dialect
        self._original = dialect.do_ping
        monkeypatch.setattr(dialect, "do_ping", self)

    def __call__(self, dbapi_connection: DBAPIConnection) -> bool:
        """Count, then ping for real."""
        self.calls += 1
        return self._original(dbapi_connection)


async def test_idle_pre_ping_skips_recently_used_connections(
    make_settings: SettingsFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With pre_ping_idle, only a connection idle longer than the threshold is pinged."""
    engine = create_engine(make_settings(db={"pool_size": 1, "pre_ping_idle": 0.2}))
    counter = PingCounter(engine, monkeypatch)

    for _ in range(3):
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
    pings_while_busy = counter.calls
    await asyncio.sleep(0.3)
    async with engine.connect() as connection:
        await connection.execute(text("SELECT 1"))

    assert pings_while_busy == 0
    assert counter.calls == 1
    await engine.dispose()


async def test_idle_pre_ping_counts_from_the_previous_checkout(
    make_settings: SettingsFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A connection held past the threshold is pinged when reused, even right after its return.

    Idle time is counted from the previous checkout (one listener, nothing on checkin), so
    the check errs towards pinging: it can ping a connection that was busy, never skip one
    that sat idle.
    """
    engine = create_engine(make_settings(db={"pool_size": 1, "pre_ping_idle": 0.2}))
    counter = PingCounter(engine, monkeypatch)

    async with engine.connect() as connection:
        await connection.execute(text("SELECT 1"))
        await asyncio.sleep(0.3)  # held, not idle
    async with engine.connect() as connection:
        await connection.execute(text("SELECT 1"))

    assert counter.calls == 1
    await engine.dispose()


async def test_default_pre_ping_skips_busy_connections(
    make_settings: SettingsFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """By default a connection reused right after its last use is not pinged."""
    engine = create_engine(make_settings(db={"pool_size": 1}))
    counter = PingCounter(engine, monkeypatch)

    for _ in range(3):
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))

    assert counter.calls == 0
    await engine.dispose()


async def test_pre_ping_idle_zero_pings_every_checkout(
    make_settings: SettingsFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With pre_ping_idle 0, every reuse of a pooled connection is pinged."""
    engine = create_engine(make_settings(db={"pool_size": 1, "pre_ping_idle": 0}))
    counter = PingCounter(engine, monkeypatch)

    for _ in range(3):
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))

    assert counter.calls == 2
    await engine.dispose()


class _Driver:
    """A driver connection that reports its state like asyncpg's."""

    def __init__(self, *, closed: bool) -> None:
        self.closed = closed

    def is_closed(self) -> bool:
        """Answer as asyncpg does, without I/O."""
        return self.closed


class _Adapted:
    """SQLAlchemy's adapter shape: the driver's connection under ``driver_connection``."""

    def __init__(self, driver: object) -> None:
        self.driver_connection = driver


@pytest.mark.parametrize(("closed", "expected"), [(True, True), (False, False)])
def test_driver_connection_closed_asks_the_driver(*, closed: bool, expected: bool) -> None:
    """A connection whose driver reports it closed is recognised without any I/O."""
    adapted: Any = _Adapted(_Driver(closed=closed))

    assert driver_connection_closed(adapted) is expected


async def test_a_sqlite_file_that_cannot_be_opened_leaves_no_worker_thread(
    make_settings: SettingsFactory, tmp_path: Path
) -> None:
    """A failed open's worker thread has stopped before the error reaches the caller.

    Left running, it hands its last result to the event loop later; once that loop has
    closed, the hand-off raises in the thread: a traceback outside the JSON logs, and in a
    test run an error pinned on whichever test runs next.
    """
    url = f"sqlite+aiosqlite:///{tmp_path / 'missing-dir' / 'app.db'}"
    engine = create_engine(make_settings(db={"url": url}))
    before = set(threading.enumerate())

    with pytest.raises(exc.OperationalError, match="unable to open database file"):
        async with engine.connect():
            pass

    left = [thread for thread in threading.enumerate() if thread not in before]
    await engine.dispose()
    assert left == []
    assert not (tmp_path / "missing-dir").exists()


async def test_driver_connection_closed_is_false_on_sqlite(make_settings: SettingsFactory) -> None:
    """Drivers without such a check (aiosqlite) count as open, so SQLite keeps working."""
    engine = create_engine(make_settings())
    seen: list[bool] = []
    event.listen(
        engine.sync_engine.pool,
        "checkout",
        lambda dbapi, _record, _proxy: seen.append(driver_connection_closed(dbapi)),
    )

    async with engine.connect() as connection:
        await connection.execute(text("SELECT 1"))

    assert seen == [False]
    await engine.dispose()
