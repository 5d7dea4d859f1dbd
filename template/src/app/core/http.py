"""The shared outbound HTTP client: explicit per-phase timeouts and connection limits."""

import functools
import ssl

import httpx

from app.core.config import Settings
from app.core.meta import service_name, service_version


@functools.cache
def tls_context() -> ssl.SSLContext:
    """Return the process's one TLS context for outbound calls, with certifi's CA bundle.

    Loading the bundle takes about 20 ms of CPU; a client built with ``verify=True`` loads
    it again each time. The service builds one client, but every app its tests start builds
    one too, and a context can be shared by any number of clients.

    Returns:
        A verifying client context (httpx's defaults).
    """
    return httpx.create_ssl_context()


def create_http_client(settings: Settings) -> httpx.AsyncClient:
    """Build the one `httpx.AsyncClient` the service shares; close it at shutdown.

    The timeouts bound each phase (connect, each read, each write, waiting for a pooled
    connection), not the whole call: a server that trickles bytes can exceed them, so
    wrap calls that must finish by a deadline in `app.core.concurrency.deadline`.

    Args:
        settings: Supplies ``http.*`` timeouts and limits.

    Returns:
        A client that must be closed with ``await client.aclose()``.
    """
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
