"""The shared outbound HTTP client: explicit per-phase timeouts and connection limits.

httpx is imported on the first call that builds a client, not with this module: its import
holds about 1.9 MiB for the life of the process (measured by ``bench/``), and a service that
never calls out should not carry it.
"""

import asyncio
import functools
import ssl
from typing import TYPE_CHECKING

from app.core.concurrency import run_blocking
from app.core.config import Settings
from app.core.meta import service_name, service_version

if TYPE_CHECKING:
    import httpx


@functools.cache
def tls_context() -> ssl.SSLContext:
    """Return the process's one TLS context for outbound calls, with certifi's CA bundle.

    Loading the bundle takes about 20 ms of CPU; a client built with ``verify=True`` loads
    it again each time. The service builds one client, but every app its tests start builds
    one too, and a context can be shared by any number of clients.

    Returns:
        A verifying client context (httpx's defaults).
    """
    import httpx  # noqa: PLC0415 -- deferred until a client is needed (module docstring)

    return httpx.create_ssl_context()


def create_http_client(settings: Settings) -> "httpx.AsyncClient":
    """Build the one `httpx.AsyncClient` the service shares; close it at shutdown.

    The timeouts bound each phase (connect, each read, each write, waiting for a pooled
    connection), not the whole call: a server that trickles bytes can exceed them, so
    wrap calls that must finish by a deadline in `app.core.concurrency.deadline`.

    Args:
        settings: Supplies ``http.*`` timeouts and limits.

    Returns:
        A client that must be closed with ``await client.aclose()``.
    """
    import httpx  # noqa: PLC0415 -- deferred until a client is needed (module docstring)

    http = settings.http
    return httpx.AsyncClient(
        timeout=httpx.Timeout(
            connect=http.connect_timeout,
            read=http.read_timeout,
            write=http.write_timeout,
            pool=http.pool_timeout,
        ),
        limits=httpx.Limits(
            max_connections=http.max_connections,
            max_keepalive_connections=http.max_keepalive,
        ),
        headers={"user-agent": f"{service_name()}/{service_version()}"},
        verify=tls_context(),
    )


class LazyHttpClient:
    """The service's one outbound client, built on its first use and closed at shutdown.

    Building a client loads certifi's CA bundle into a TLS context: about 20 ms of CPU and
    2.4 MiB of memory for the life of the process (measured by ``bench/``). A service that
    never calls out never pays it; one that does pays it once, on the first call, in a
    worker thread so the event loop keeps serving meanwhile.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._client: httpx.AsyncClient | None = None
        self._building = asyncio.Lock()
        self._closed = False

    @property
    def built(self) -> bool:
        """Whether the client exists yet."""
        return self._client is not None

    async def get(self) -> "httpx.AsyncClient":
        """Return the client, building it on the first call (concurrent first calls share it).

        Returns:
            The shared client.

        Raises:
            RuntimeError: The service is shutting down and the client was closed.
        """
        client = self._client
        if client is None:
            async with self._building:
                if self._client is None and not self._closed:
                    self._client = await run_blocking(create_http_client, self._settings)
                client = self._client
        if self._closed or client is None:
            raise RuntimeError("the outbound HTTP client is closed: the service is stopping")
        return client

    async def aclose(self) -> None:
        """Close the client if it was built; later `get` calls raise."""
        self._closed = True
        async with self._building:
            if self._client is not None:
                await self._client.aclose()
