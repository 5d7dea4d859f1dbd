"""Request dependencies: typed lifespan state and the ``Annotated`` aliases routes declare.

The dependency functions are ``async def`` although they never await: FastAPI runs a plain
``def`` dependency in its thread pool, a thread hand-off that costs more per request than
the lookup it wraps (about a quarter of a one-row read's CPU time, measured by ``bench/``).
"""

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Annotated, TypedDict, cast

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.core.config import Settings
from app.core.http import LazyHttpClient
from app.core.lifecycle import Lifecycle

if TYPE_CHECKING:
    import httpx


class AppState(TypedDict):
    """What the lifespan creates at startup; each request sees it as ``request.state``."""

    settings: Settings
    lifecycle: Lifecycle
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    http_client: LazyHttpClient


def app_state(request: Request) -> AppState:
    """Return the lifespan state of the application serving ``request``.

    Args:
        request: The current request.

    Returns:
        The per-request copy of the state the lifespan yielded.
    """
    return cast("AppState", request.scope["state"])


async def get_settings(request: Request) -> Settings:
    """Return the settings the app was created with (not the process environment).

    Args:
        request: The current request.

    Returns:
        The app's settings.
    """
    return app_state(request)["settings"]


async def get_engine(request: Request) -> AsyncEngine:
    """Return the shared engine.

    Args:
        request: The current request.

    Returns:
        The engine created by the lifespan.
    """
    return app_state(request)["engine"]


async def get_http_client(request: Request) -> "httpx.AsyncClient":
    """Return the shared outbound HTTP client, built on the first request that needs it.

    Args:
        request: The current request.

    Returns:
        The client the lifespan closes at shutdown.
    """
    return await app_state(request)["http_client"].get()


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """Open one session for the request and close it afterwards.

    The session does not commit on its own: wrap writes in ``async with session.begin():``.

    Args:
        request: The current request.

    Yields:
        A session used by this request only.
    """
    async with app_state(request)["sessionmaker"]() as session:
        yield session


SettingsDep = Annotated[Settings, Depends(get_settings)]
"""The settings the application was created with."""

EngineDep = Annotated[AsyncEngine, Depends(get_engine)]
"""The pooled async engine (for Core queries and health checks)."""

SessionDep = Annotated[AsyncSession, Depends(get_session)]
"""A request-scoped ORM session; commit explicitly with ``session.begin()``."""

if TYPE_CHECKING:
    HttpClientDep = Annotated[httpx.AsyncClient, Depends(get_http_client)]
    """The shared outbound HTTP client with explicit timeouts."""
else:

    def __getattr__(name: str) -> object:
        # `HttpClientDep` names httpx's client class, so it is made on first import: httpx
        # stays unloaded (about 1.9 MiB) unless a route calls out (see `app.core.http`).
        if name != "HttpClientDep":
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        import httpx  # noqa: PLC0415 -- deferred on purpose, see above

        alias = Annotated[httpx.AsyncClient, Depends(get_http_client)]
        globals()[name] = alias
        return alias
