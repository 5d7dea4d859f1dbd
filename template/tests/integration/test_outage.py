"""PostgreSQL unreachable: probes, recovery without a restart, and the connect timeout.

A `TcpProxy` sits between the service and PostgreSQL; switching it to ``blackhole``
(packets vanish) or ``refuse`` (nothing listens) is the outage.
"""

import time
from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy.engine import make_url

from app.core.config import Settings
from app.main import create_app
from tests.integration.conftest import PgSettings
from tests.integration.live import serving, wait_for, with_sleep_route
from tests.tcp_proxy import TcpProxy

# The service runs in a thread of this process (see `serving`), so the loop guard would
# measure that thread holding the GIL, not blocking calls in this test's loop, which only
# sends requests. The service's own loop is not watched by it in any case.
pytestmark = pytest.mark.loop_guard(threshold=None)

READINESS_TIMEOUT = 1.0
MARGIN = 1.5
"""Seconds of slack on a loaded CI machine; far below asyncpg's 60 s connect default."""


@pytest.fixture
async def proxy(database_url: str) -> AsyncIterator[TcpProxy]:
    """A proxy in front of the test PostgreSQL, forwarding until told otherwise."""
    url = make_url(database_url)
    async with TcpProxy(url.host or "127.0.0.1", url.port or 5432) as started:
        yield started


def _via(proxy: TcpProxy, database_url: str) -> str:
    url = make_url(database_url).set(host=proxy.host, port=proxy.port)
    return url.render_as_string(hide_password=False)


@pytest.fixture
def proxied_settings(pg_settings: PgSettings, proxy: TcpProxy, database_url: str) -> Settings:
    """Settings whose database is reached through the proxy; one pooled connection.

    A single connection makes a leaked pool slot (a checkout cut short by a timeout
    and never returned) show up at once as a service that never becomes ready again.
    """
    base = pg_settings(url=_via(proxy, database_url), pool_size=1, max_overflow=0)
    return base.model_copy(
        update={"server": base.server.model_copy(update={"readiness_timeout": READINESS_TIMEOUT})}
    )


async def _timed_get(client: httpx.AsyncClient, path: str) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = await client.get(path)
    return response, time.monotonic() - started


async def _ready(client: httpx.AsyncClient) -> bool:
    return (await client.get("/readyz")).status_code == 200


@pytest.mark.parametrize(
    "outage",
    [pytest.param("blackhole", marks=pytest.mark.slow), "refuse"],  # blackhole waits out timeouts
)
async def test_readyz_fails_during_outage_and_recovers_without_restart(
    proxied_settings: Settings, proxy: TcpProxy, outage: str, request: pytest.FixtureRequest
) -> None:
    """Unreachable DB: /readyz 503 within its timeout, /livez 200; back: /readyz 200 again."""
    async with serving(create_app(proxied_settings)) as client:
        before = await client.get("/readyz")
        await proxy.set_mode("blackhole" if outage == "blackhole" else "refuse")
        down, down_seconds = await _timed_get(client, "/readyz")
        down_again, _ = await _timed_get(client, "/readyz")
        live = await client.get("/livez")
        await proxy.set_mode("forward")
        recovery_seconds = await wait_for(lambda: _ready(client), within=10)

    assert before.status_code == 200
    assert (down.status_code, down_again.status_code) == (503, 503)
    assert down.json()["error"]["code"] == "db_unavailable"
    assert down_seconds < READINESS_TIMEOUT + MARGIN, down_seconds
    assert live.status_code == 200
    request.node.user_properties += [
        ("readyz_down_seconds", round(down_seconds, 3)),
        ("readyz_recovery_seconds", round(recovery_seconds, 3)),
    ]


async def test_service_started_while_database_down_becomes_ready_by_itself(
    proxied_settings: Settings, proxy: TcpProxy, request: pytest.FixtureRequest
) -> None:
    """Started with PostgreSQL down: it starts (live, not ready), then turns ready on its own."""
    await proxy.set_mode("refuse")

    async with serving(create_app(proxied_settings)) as client:
        live = await client.get("/livez")
        ready = await client.get("/readyz")
        await proxy.set_mode("forward")
        ready_after = await wait_for(lambda: _ready(client), within=10)

    assert live.status_code == 200
    assert ready.status_code == 503
    request.node.user_properties.append(("ready_after_db_appeared_seconds", round(ready_after, 3)))


@pytest.mark.slow  # waits out the connect timeout
async def test_blackholed_database_fails_at_connect_timeout(
    pg_settings: PgSettings, proxy: TcpProxy, database_url: str, request: pytest.FixtureRequest
) -> None:
    """A host that accepts TCP but never answers fails after connect_timeout, not asyncpg's 60 s."""
    settings = pg_settings(url=_via(proxy, database_url), connect_timeout=0.5)
    await proxy.set_mode("blackhole")

    async with serving(with_sleep_route(create_app(settings))) as client:
        response, elapsed = await _timed_get(client, "/sleep?seconds=0")

    assert proxy.accepted >= 1  # the TCP handshake succeeded; the protocol never started
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert response.json()["error"]["code"] == "db_unavailable"
    assert 0.4 <= elapsed < settings.db.connect_timeout + MARGIN, elapsed
    request.node.user_properties.append(("connect_timeout_seconds", round(elapsed, 3)))
