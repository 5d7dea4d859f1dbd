"""A TCP proxy that makes PostgreSQL slow to answer queries, and counts connections.

Put between a service and the database, it makes each query take as long as the test wants
without adding a single route to the service. Only query traffic is held: connecting and
disconnecting stay fast, as with a busy database on a quick network. It also tells whether
each client connection ended with the protocol's Terminate message (what a disposed pool
sends) or was just dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Self

# Frontend "Terminate": type byte X, then the length (4) of the message including itself.
TERMINATE = b"X\x00\x00\x00\x04"
# Type bytes of the frontend messages that start a query: simple Query, Parse, Bind. Startup
# and SSL requests start with a length (a zero byte), Terminate with X: those pass at once.
QUERY_MESSAGES = frozenset(b"QPB")


@dataclass
class ProxyStats:
    """What the proxy saw; updated by its event loop, read by the test thread."""

    accepted: int = 0
    open: int = 0
    peak_open: int = 0
    terminated: int = 0
    """Client connections whose last message before closing was Terminate."""
    dropped: int = 0
    """Client connections that closed without Terminate."""


class LatencyProxy:
    """Forward 127.0.0.1:<port> to an upstream, holding each query ``delay`` seconds.

    Runs its own event loop in a daemon thread; use it as a context manager.
    """

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.delay = 0.0
        self.stats = ProxyStats()
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    def __enter__(self) -> Self:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, "127.0.0.1", 0), self._loop
        ).result(timeout=10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def __exit__(self, *_exc: object) -> None:
        async def close(server: asyncio.Server) -> None:
            server.close()
            # Closing both ends of every connection lets each pipe see EOF and finish.
            for writer in self._writers:
                writer.close()
            connections = asyncio.all_tasks() - {asyncio.current_task()}
            if connections:
                await asyncio.wait(connections, timeout=5)
            await server.wait_closed()

        if self._server is not None:
            asyncio.run_coroutine_threadsafe(close(self._server), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def wait_for(self, condition: Callable[[ProxyStats], bool], timeout: float) -> bool:
        """Poll the stats until ``condition`` holds; return whether it did within ``timeout``."""
        deadline = time.monotonic() + timeout
        while not condition(self.stats):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        stats = self.stats
        stats.accepted += 1
        stats.open += 1
        stats.peak_open = max(stats.peak_open, stats.open)
        tail = b""
        self._writers.add(client_w)
        try:
            server_r, server_w = await asyncio.open_connection(*self.upstream)
            self._writers.add(server_w)
            upstream = asyncio.create_task(self._pipe(server_r, client_w, delayed=False))
            tail = await self._pipe(client_r, server_w, delayed=True)
            # The client has finished sending; let the server's last replies through.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(upstream, timeout=5)
            upstream.cancel()
        finally:
            stats.open -= 1
            if tail.endswith(TERMINATE):
                stats.terminated += 1
            else:
                stats.dropped += 1
            client_w.close()

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, delayed: bool
    ) -> bytes:
        """Copy until EOF, holding chunks that start a query if ``delayed``; return the tail."""
        tail = b""
        try:
            while chunk := await reader.read(65536):
                tail = (tail + chunk)[-len(TERMINATE) :]
                if delayed and self.delay and chunk[0] in QUERY_MESSAGES:
                    await asyncio.sleep(self.delay)
                writer.write(chunk)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()
        return tail
