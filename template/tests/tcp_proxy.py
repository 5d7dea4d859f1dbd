"""A TCP proxy for outage tests: put it between the service and PostgreSQL, then break it.

Modes, switchable while it runs:

- ``forward``: relay bytes both ways, like a healthy network;
- ``blackhole``: accept connections and never answer, like a host whose packets vanish
  (a dead firewall route, a frozen server): clients wait for their own timeouts;
- ``refuse``: stop listening, so connecting fails at once, like a stopped server.
  The port stays reserved (bound, not listening), so nothing else on the machine
  can take it before ``forward`` listens on it again.

Switching mode closes every connection opened before, as an outage does.

    async with TcpProxy("127.0.0.1", 5432) as proxy:
        url = f"postgresql+asyncpg://user:pw@127.0.0.1:{proxy.port}/db"
        await proxy.set_mode("blackhole")
"""

import asyncio
import contextlib
import socket
from types import TracebackType
from typing import Literal, Self

type Mode = Literal["forward", "blackhole", "refuse"]

_CHUNK = 65536


class TcpProxy:
    """Relay TCP connections from a local port to ``upstream_host:upstream_port``."""

    def __init__(self, upstream_host: str, upstream_port: int, *, mode: Mode = "forward") -> None:
        """Prepare the proxy; ``start`` (or ``async with``) opens the port.

        Args:
            upstream_host: Where ``forward`` mode connects.
            upstream_port: The upstream TCP port.
            mode: The mode to start in.
        """
        self.upstream = (upstream_host, upstream_port)
        self.mode: Mode = mode
        self.host = "127.0.0.1"
        self.port = 0
        self.accepted = 0
        self._server: asyncio.Server | None = None
        self._reserved: socket.socket | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Reserve a port, and listen on it unless the mode is ``refuse``."""
        if self._reserved is None:
            # Hold the port until `close`: `refuse` closes the listener, and switching back
            # must reopen the address the service was configured with. A bound socket that
            # never listens keeps the kernel from handing the port to another bind(0) or to
            # an outgoing connection meanwhile, and connecting to it is refused. Both it and
            # the listener set SO_REUSEADDR, which lets them share the port.
            reserved = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                reserved.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                reserved.bind((self.host, self.port))
            except OSError:
                reserved.close()
                raise
            self._reserved = reserved
            self.port = int(reserved.getsockname()[1])
        if self.mode != "refuse":
            await self._listen()

    async def set_mode(self, mode: Mode) -> None:
        """Switch mode; connections made before the switch are closed.

        Args:
            mode: The new mode.
        """
        self.mode = mode
        self._drop_connections()
        if mode == "refuse":
            await self._close_listener()
        elif self._server is None:
            await self._listen()

    async def close(self) -> None:
        """Stop listening, close every connection and release the port."""
        self._drop_connections()
        await self._close_listener()
        if self._reserved is not None:
            self._reserved.close()
            self._reserved = None
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)

    async def __aenter__(self) -> Self:
        """Start the proxy."""
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Close the proxy."""
        await self.close()

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(
            self._on_client, self.host, self.port, reuse_address=True
        )

    async def _close_listener(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    def _drop_connections(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    def _track(self, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self._track(writer)
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            if self.mode == "blackhole":
                await self._swallow(reader)
            else:
                await self._relay(reader, writer)
        finally:
            writer.transport.abort()
            self._writers.discard(writer)
            if task is not None:
                self._tasks.discard(task)

    @staticmethod
    async def _swallow(reader: asyncio.StreamReader) -> None:
        # Read and discard until the client gives up or a mode switch aborts the socket.
        with contextlib.suppress(OSError):
            while await reader.read(_CHUNK):
                pass

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            return
        self._track(up_writer)
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._pipe(reader, up_writer))
                group.create_task(self._pipe(up_reader, writer))
        finally:
            up_writer.transport.abort()
            self._writers.discard(up_writer)

    @staticmethod
    async def _pipe(source: asyncio.StreamReader, target: asyncio.StreamWriter) -> None:
        # Either side closing, or an abort from a mode switch, ends both directions.
        try:
            while data := await source.read(_CHUNK):
                target.write(data)
                await target.drain()
        except OSError:
            pass
        finally:
            target.transport.abort()
