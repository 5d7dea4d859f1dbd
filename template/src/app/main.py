"""Application factory: ``create_app(settings)`` and the lifespan owning long-lived resources.

There is no module-level application: importing this module connects to nothing and
reads no environment variable. ``python -m app`` builds the app from the settings.
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from app.api.deps import AppState
from app.api.errors import add_exception_handlers
from app.api.middleware import RequestContextMiddleware
from app.api.router import api_routes
from app.api.routing import RouteIndex
from app.core.concurrency import deadline
from app.core.config import Settings
from app.core.db import create_engine, create_sessionmaker
from app.core.http import LazyHttpClient
from app.core.lifecycle import Lifecycle
from app.core.meta import service_name, service_version

_log = structlog.get_logger(__name__)

# Closing the pool closes one connection after another; on a network that stopped answering each
# close could wait on TCP. Past this many seconds the pool is dropped without the goodbyes, so a
# stop stays within the orchestrator's grace period (the server closes the sockets as it exits).
DISPOSE_TIMEOUT = 5.0


async def _dispose(engine: AsyncEngine) -> None:
    try:
        async with deadline(DISPOSE_TIMEOUT):
            await engine.dispose()
    except TimeoutError:
        _log.warning("app.dispose_timeout", seconds=DISPOSE_TIMEOUT)
        await engine.dispose(close=False)


def create_app(settings: Settings) -> FastAPI:
    """Build the FastAPI application for ``settings``.

    The lifespan creates the database engine at startup (the shared HTTP client is built
    on its first use) and closes both at shutdown, after the server has drained in-flight
    requests.
    Routes reach them through the dependencies in `app.api.deps`.

    Args:
        settings: The validated settings; tests pass their own.

    Returns:
        The application, with ``app.state.lifecycle`` shared with the server.
    """
    lifecycle = Lifecycle()

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[AppState]:
        engine = create_engine(settings)
        http_client = LazyHttpClient(settings)
        try:
            _log.info(
                "app.started",
                environment=settings.environment,
                db_backend=engine.url.get_backend_name(),
            )
            yield AppState(
                settings=settings,
                lifecycle=lifecycle,
                engine=engine,
                sessionmaker=create_sessionmaker(engine),
                http_client=http_client,
            )
        finally:
            try:
                await http_client.aclose()
            finally:
                await _dispose(engine)
                _log.info("app.stopped")

    # Interactive docs advertise every route; production serves none of them.
    public_docs = settings.environment != "production"
    app = FastAPI(
        title=service_name(),
        version=service_version(),
        lifespan=lifespan,
        docs_url="/docs" if public_docs else None,
        redoc_url=None,
        openapi_url="/openapi.json" if public_docs else None,
    )
    app.state.lifecycle = lifecycle
    add_exception_handlers(app)
    # Ahead of the docs routes FastAPI registered, and found through an index: the router tries
    # routes in order, and each one passed over costs nearly 2 % of a /livez request.
    routes = api_routes()
    app.router.routes[:0] = [RouteIndex(routes), *routes]
    app.add_middleware(
        RequestContextMiddleware,
        max_body_bytes=settings.server.max_body_bytes,
        access_log=settings.log.access,
    )
    return app
