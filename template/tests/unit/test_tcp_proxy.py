"""The outage tests' TCP proxy, checked against a local echo server (no database needed)."""

import asyncio
import contextlib
import errno
import socket
from collections.abc import AsyncIterator

import pytest

from tests.tcp_proxy import TcpProxy

QUIET = 0.2
"""Seconds a blackholed connection must stay silent."""


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while data := await reader.read(1024):
            writer.write(data)
            await writer.drain()
    writer.close()


@pytest.fixture
async def upstream() -> AsyncIterator[int]:
    """An echo server on a free local port; yields the port."""
    server = await asyncio.start_server(_echo, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1]


async def _round_trip(port: int, payload: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(payload)
        await writer.drain()
        return await asyncio.wait_for(reader.readexactly(len(payload)), timeout=5)
    finally:
        writer.close()


async def _closed(reader: asyncio.StreamReader) -> bytes:
    """Read what comes before the connection ends; a reset counts as an end."""
    try:
        return await asyncio.wait_for(reader.read(1), timeout=5)
    except ConnectionResetError:
        return b""


def _bind_exclusively(port: int) -> OSError | None:
    """Bind ``port`` without SO_REUSEADDR, as a stranger would; return the error, if any."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as stranger:
        try:
            stranger.bind(("127.0.0.1", port))
        except OSError as error:
            return error
    return None


async def test_refuse_keeps_the_port_and_forward_listens_on_it_again(upstream: int) -> None:
    """Forward relays, refuse fails at once while holding the port, forward again relays."""
    async with TcpProxy("127.0.0.1", upstream) as proxy:
        port = proxy.port
        first = await _round_trip(port, b"before")

        await proxy.set_mode("refuse")
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", port)
        taken = _bind_exclusively(port)

        await proxy.set_mode("forward")
        again = await _round_trip(port, b"after")

    assert first == b"before"
    assert taken is not None, "the port was free while refusing: anything could have taken it"
    assert taken.errno == errno.EADDRINUSE
    assert (proxy.port, again) == (port, b"after")


async def test_blackhole_accepts_and_never_answers(upstream: int) -> None:
    """A blackholed connection is accepted and stays silent; forward relays again after."""
    async with TcpProxy("127.0.0.1", upstream, mode="blackhole") as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"anyone there?")
        await writer.drain()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(reader.read(1), timeout=QUIET)
        await proxy.set_mode("forward")
        cut = await _closed(reader)  # the switch closes it
        writer.close()
        relayed = await _round_trip(proxy.port, b"back")

    assert proxy.accepted == 2
    assert cut == b""
    assert relayed == b"back"


async def test_starting_in_refuse_mode_reserves_and_close_releases(upstream: int) -> None:
    """A proxy started refusing already holds its port; closing it gives the port back."""
    proxy = TcpProxy("127.0.0.1", upstream, mode="refuse")
    await proxy.start()
    try:
        held = _bind_exclusively(proxy.port)
    finally:
        await proxy.close()
    released = _bind_exclusively(proxy.port)

    assert held is not None
    assert held.errno == errno.EADDRINUSE
    assert released is None
