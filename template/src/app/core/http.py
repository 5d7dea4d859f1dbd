"""The shared outbound HTTP client: explicit per-phase timeouts and connection limits."""

import httpx

from app.core.config import Settings
from app.core.meta import service_name, service_version


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
    )
