import asyncio
import ssl
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.api import deps
from app.core import http as http_module
from app.core.concurrency import bounded_gather, run_blocking
from app.core.config import Settings
from app.core.http import LazyHttpClient, create_http_client, tls_context
from app.core.meta import service_name
from tests.conftest import SettingsFactory


async def _client(settings: Settings) -> httpx.AsyncClient:
    # Building the SSL context reads certificate files: keep it off the event loop.
    return await run_blocking(create_http_client, settings)


class SilentServer:
    """A local TCP server that reads requests and never answers them."""

    def __init__(self) -> None:
        self.connections = 0
        self.release = asyncio.Event()
        self.url = ""

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Read the request head, then hold the connection until released."""
        self.connections += 1
        await reader.readuntil(b"\r\n\r\n")
        await self.release.wait()
        writer.close()


@pytest.fixture
async def silent_server() -> AsyncIterator[SilentServer]:
    """A running SilentServer on a free port."""
    silent = SilentServer()
    server = await asyncio.start_server(silent.handle, "127.0.0.1", 0)
    host, port = server.sockets[0].getsockname()[:2]
    silent.url = f"http://{host}:{port}/"
    yield silent
    silent.release.set()
    server.close()
    await server.wait_closed()


async def test_client_has_explicit_timeouts_and_user_agent(make_settings: SettingsFactory) -> None:
    """Every phase has the configured timeout; requests identify the service."""
    settings = make_settings(
        http={"connect_timeout": 1, "read_timeout": 2, "write_timeout": 3, "pool_timeout": 4}
    )

    async with await _client(settings) as client:
        timeout = client.timeout
        user_agent = client.headers["user-agent"]

    assert httpx.Timeout(connect=1, read=2, write=3, pool=4) == timeout
    assert user_agent.startswith(f"{service_name()}/")


async def test_read_timeout_applies(
    make_settings: SettingsFactory, silent_server: SilentServer
) -> None:
    """A server that never answers fails the call after read_timeout, not later."""
    settings = make_settings(http={"read_timeout": 0.2})
    started = time.monotonic()

    async with await _client(settings) as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.get(silent_server.url)

    assert time.monotonic() - started < 2


async def test_connection_limit_applies(
    make_settings: SettingsFactory, silent_server: SilentServer
) -> None:
    """With max_connections reached, another call waits pool_timeout and then fails."""
    settings = make_settings(
        http={"max_connections": 1, "max_keepalive": 1, "pool_timeout": 0.2, "read_timeout": 5}
    )

    async with await _client(settings) as client, asyncio.TaskGroup() as group:
        first = group.create_task(client.get(silent_server.url))
        await asyncio.sleep(0.1)
        with pytest.raises(httpx.PoolTimeout):
            await client.get(silent_server.url)
        first.cancel()

    assert silent_server.connections == 1


async def test_clients_share_one_verifying_tls_context(settings: Settings) -> None:
    """The CA bundle is loaded once per process; every client verifies certificates with it."""
    first, second = await _client(settings), await _client(settings)
    try:
        contexts = {
            id(client._transport._pool._ssl_context)  # type: ignore[attr-defined]  # httpx internals
            for client in (first, second)
        }
        assert contexts == {id(tls_context())}
        assert tls_context().verify_mode == ssl.CERT_REQUIRED
        assert tls_context().check_hostname
    finally:
        await first.aclose()
        await second.aclose()


async def test_lazy_client_is_built_once_for_concurrent_first_calls(
    make_settings: SettingsFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing is built before the first call; ten racing first calls get one client."""
    builds: list[httpx.AsyncClient] = []

    def counting(settings: Settings) -> httpx.AsyncClient:
        builds.append(create_http_client(settings))
        return builds[-1]

    monkeypatch.setattr(http_module, "create_http_client", counting)
    lazy = LazyHttpClient(make_settings())
    assert not lazy.built

    clients = await bounded_gather([lazy.get] * 10, limit=10)

    assert len(builds) == 1
    assert all(client is builds[0] for client in clients)
    await lazy.aclose()
    assert builds[0].is_closed


async def test_lazy_client_refuses_after_close(make_settings: SettingsFactory) -> None:
    """Closed at shutdown, it never builds a new client that nothing would close."""
    lazy = LazyHttpClient(make_settings())
    await lazy.aclose()  # never built: nothing to close

    with pytest.raises(RuntimeError, match="closed"):
        await lazy.get()
    assert not lazy.built


def test_a_route_declaring_the_client_gets_the_shared_one(app: FastAPI) -> None:
    """`HttpClientDep` resolves to one verifying client, built on the first request that asks."""
    seen: list[httpx.AsyncClient] = []

    @app.get("/outbound")
    async def outbound(client: deps.HttpClientDep) -> dict[str, bool]:
        seen.append(client)
        return {"closed": client.is_closed}

    with TestClient(app) as test_client:
        lazy = test_client.app_state["http_client"]
        assert not lazy.built
        answers = [test_client.get("/outbound").json() for _ in range(2)]
        assert lazy.built

    assert answers == [{"closed": False}] * 2
    assert len(seen) == 2
    assert seen[0] is seen[1]
    assert seen[0].is_closed  # the lifespan closed it at shutdown
