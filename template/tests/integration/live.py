"""Helpers for integration tests: the app served by a real uvicorn, PostgreSQL observed.

A real server (not an in-memory transport) is what the pool and outage tests need:
requests run concurrently, each in its own task, through the same middleware,
lifespan and exception handlers as in production.
"""

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import uvicorn
from fastapi import APIRouter, FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from app.api.deps import SessionDep
from app.core.db import application_name

OBSERVER_NAME = "integration-observer"
"""``application_name`` of the tests' own connections, never counted as the service's."""

sleep_router = APIRouter()


@sleep_router.get("/sleep")
async def sleep_in_database(session: SessionDep, seconds: float) -> dict[str, float]:
    """Hold a pooled connection for ``seconds`` inside PostgreSQL (test-only route)."""
    await session.execute(text("SELECT pg_sleep(:seconds)"), {"seconds": seconds})
    return {"slept": seconds}


def with_sleep_route(app: FastAPI) -> FastAPI:
    """Add the test-only ``/sleep`` route to an app built by ``create_app``."""
    app.include_router(sleep_router)
    return app


@contextlib.asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """Serve ``app`` on a free local port; yield a client whose base URL points at it.

    uvicorn runs in its own thread and event loop, as a separate process would: the
    lifespan (engine, HTTP client) starts and stops there, and the test's loop only
    sends requests.
    """
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    config = uvicorn.Config(
        app, lifespan="on", log_config=None, access_log=False, timeout_graceful_shutdown=2
    )
    server = uvicorn.Server(config)  # outside the main thread it installs no signal handlers
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    try:
        while not server.started:
            if not thread.is_alive():
                raise AssertionError("the server stopped during startup")
            await asyncio.sleep(0.01)
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", timeout=30, limits=limits
        ) as client:
            yield client
    finally:
        server.should_exit = True
        await asyncio.to_thread(thread.join, 10)
        listener.close()


def observer_engine(url: str) -> AsyncEngine:
    """An engine for the test's own queries, named so it is never counted as the service.

    Args:
        url: The test database URL.

    Returns:
        An engine without a pool; dispose of it after the test.
    """
    return create_async_engine(
        url,
        poolclass=NullPool,
        # pg_stat_activity is a snapshot taken once per transaction: each query needs its own.
        isolation_level="AUTOCOMMIT",
        connect_args={"server_settings": {"application_name": OBSERVER_NAME}},
    )


_COUNT = text(
    "SELECT count(*) FROM pg_stat_activity "
    "WHERE application_name = :name AND datname = current_database()"
)


async def service_connections(observer: AsyncEngine) -> int:
    """Count the connections this test process's service holds, per ``pg_stat_activity``."""
    async with observer.connect() as connection:
        result = await connection.execute(_COUNT, {"name": application_name()})
        return int(result.scalar_one())


async def terminate_service_connections(observer: AsyncEngine) -> int:
    """Kill every backend of the service with ``pg_terminate_backend``; return how many."""
    async with observer.connect() as connection:
        result = await connection.execute(
            text(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = :name AND datname = current_database()"
            ),
            {"name": application_name()},
        )
        return int(result.scalar_one())


async def _sample(observer: AsyncEngine, samples: list[int], stop: asyncio.Event) -> None:
    # One connection for all samples, so sampling itself opens nothing per round.
    async with observer.connect() as connection:
        while True:
            result = await connection.execute(_COUNT, {"name": application_name()})
            samples.append(int(result.scalar_one()))
            if stop.is_set():
                return
            await asyncio.sleep(0.005)


@contextlib.asynccontextmanager
async def sampling_connections(observer: AsyncEngine) -> AsyncIterator[list[int]]:
    """Sample the service's connection count in ``pg_stat_activity`` while the block runs.

    Args:
        observer: The engine from `observer_engine`.

    Yields:
        The list the samples are appended to; one last sample is taken after the block.
    """
    samples: list[int] = []
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as group:
        group.create_task(_sample(observer, samples, stop))
        try:
            yield samples
        finally:
            stop.set()


async def wait_for(
    check: Callable[[], Awaitable[bool]], *, within: float, interval: float = 0.05
) -> float:
    """Await ``check()`` until it returns True; return the seconds it took.

    Args:
        check: An async callable returning a bool.
        within: Seconds before the wait fails.
        interval: Seconds between checks.

    Returns:
        Elapsed seconds.

    Raises:
        AssertionError: ``check`` never returned True in time.
    """
    started = time.monotonic()
    while time.monotonic() - started < within:
        if await check():
            return time.monotonic() - started
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {within} s")
