"""Instructions per request, counted by valgrind's callgrind.

Requests per second move by tens of per cent on a shared virtual machine; the number of
instructions a request makes the service execute does not. callgrind counts them for the
whole process, in user space (the kernel's share is not counted). The service runs under
valgrind about fifty times slower, so the count covers a few thousand requests, sent
over keep-alive connections by the small client below, after a warm-up that lets the
interpreter specialise its hot code. Counting starts and stops with ``callgrind_control``,
so start-up, warm-up and shut-down are left out.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

TOOLS = ("valgrind", "callgrind_control")


def missing_tools() -> list[str]:
    """Return the tools this module needs that are not on PATH (Debian package ``valgrind``)."""
    return [tool for tool in TOOLS if shutil.which(tool) is None]


def callgrind_argv(argv: list[str], out: Path) -> list[str]:
    """Wrap a command so that it runs under callgrind with counting switched off.

    ``out`` is the dump file's prefix; valgrind adds the pid, and each dump a number.
    """
    return [
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",
        f"--callgrind-out-file={out}.%p",
        *argv,
    ]


@dataclass(frozen=True)
class Count:
    """Instructions counted over ``requests`` requests to ``path``."""

    path: str
    connections: int
    warmup: int
    requests: int
    instructions: int

    @property
    def per_request(self) -> int:
        """Return instructions per request, rounded to a whole instruction."""
        return round(self.instructions / self.requests)

    def to_json(self) -> dict[str, Any]:
        """Return the count as plain JSON values, with the per-request figure."""
        return {**asdict(self), "per_request": self.per_request}


async def _get_many(port: int, path: str, count: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
    try:
        for _ in range(count):
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status, *headers = head.decode("latin-1").split("\r\n")
            if not status.startswith("HTTP/1.1 200 "):
                raise RuntimeError(f"GET {path} answered {status!r}")
            lengths = [
                int(value)
                for name, _, value in (h.partition(":") for h in headers)
                if name.strip().lower() == "content-length"
            ]
            if len(lengths) != 1:
                raise RuntimeError(f"GET {path}: no single Content-Length in {headers!r}")
            await reader.readexactly(lengths[0])
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def send(port: int, path: str, *, connections: int, requests: int) -> None:
    """Send ``requests`` GETs (a multiple of ``connections``) over keep-alive connections.

    Raises:
        RuntimeError: An answer was not a 200 with a Content-Length.
        ValueError: ``requests`` is not a multiple of ``connections``.
    """
    each, rest = divmod(requests, connections)
    if rest or not each:
        raise ValueError(f"{requests} requests do not split over {connections} connections")

    async def all_connections() -> None:
        async with asyncio.TaskGroup() as group:
            for _ in range(connections):
                group.create_task(_get_many(port, path, each))

    asyncio.run(all_connections())


@contextlib.contextmanager
def _on_cpu(cpu: int | None) -> Iterator[None]:
    """Run the calling thread on ``cpu`` for the block (Linux; elsewhere, a no-op)."""
    if cpu is None or not hasattr(os, "sched_setaffinity"):
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def _control(pid: int, *args: str) -> None:
    subprocess.run(
        ["callgrind_control", *args, str(pid)],
        check=True,
        capture_output=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def _last_totals(prefix: Path, pid: int) -> int:
    """Return the ``totals:`` of the newest numbered dump of process ``pid``."""
    # `callgrind_control -d` numbers its dumps <prefix>.<pid>.1, .2, ...
    dumps = list(prefix.parent.glob(f"{prefix.name}.{pid}.[0-9]*"))
    if not dumps:
        raise RuntimeError(f"callgrind wrote no dump for pid {pid} next to {prefix}")
    newest = max(dumps, key=lambda dump: int(dump.suffix[1:]))
    totals = [line for line in newest.read_text().splitlines() if line.startswith("totals:")]
    if not totals:
        raise RuntimeError(f"no totals line in {newest}")
    return int(totals[-1].split()[1])


def count(
    pid: int,
    prefix: Path,
    port: int,
    path: str,
    *,
    connections: int,
    warmup: int,
    requests: int,
    cpu: int | None = None,
) -> Count:
    """Warm up, then count the instructions of ``requests`` requests to ``path``.

    ``pid`` is the valgrind process started with `callgrind_argv` (``prefix`` the same
    prefix); ``cpu``, when given, is where the client runs.
    """
    with _on_cpu(cpu):
        send(port, path, connections=connections, requests=warmup)
        _control(pid, "-z")
        _control(pid, "-i", "on")
        send(port, path, connections=connections, requests=requests)
        _control(pid, "-i", "off")
        _control(pid, "-d")
    return Count(
        path=path,
        connections=connections,
        warmup=warmup,
        requests=requests,
        instructions=_last_totals(prefix, pid),
    )
