"""Start a rendered service, probe its health endpoints, and stop it with SIGTERM."""

from __future__ import annotations

import functools
import os
import random
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

STARTUP_SECONDS = 60
SHUTDOWN_SECONDS = 30
PROBES = ("/livez", "/readyz")


@dataclass(frozen=True)
class ServerRun:
    """What one start-probe-stop cycle observed."""

    statuses: dict[str, int | None]
    exit_code: int
    output: str


# Where a chosen port may lie: registered ports above the well-known services, below Linux's
# default ephemeral range. The machine's own ephemeral range is taken out at run time.
_CHOSEN_PORTS = range(10000, 32768)
_PORT_TRIES = 200
_DRAW = random.SystemRandom()  # never reseeded by a test, unlike the module's generator


def _ephemeral_ports() -> range:
    """Return the range the kernel draws ports from for ``bind(0)`` and outgoing connections."""
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        return range(32768, 61000)  # Linux's default
    return range(low, high + 1)


@functools.cache
def _candidate_ports() -> tuple[int, ...]:
    ephemeral = _ephemeral_ports()
    return tuple(port for port in _CHOSEN_PORTS if port not in ephemeral)


def free_port() -> int:
    """Return a loopback TCP port that is free now and that the kernel does not hand out itself.

    The port is given to a process that binds it a moment later. A port from ``bind(0)`` would
    come from the ephemeral range, which the kernel also draws from for every outgoing
    connection and every other ``bind(0)``: in a parallel test session another test's proxy or
    database client could take it in that moment (seen in CI: a latency proxy bound the port a
    benchmark's service was about to bind). This one is drawn at random from outside that
    range, where only a caller choosing on purpose binds, and checked free by binding it.
    """
    candidates = _candidate_ports()
    if candidates:
        for port in _DRAW.choices(candidates, k=_PORT_TRIES):
            with socket.socket() as sock:
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    # Every candidate tried was taken, or the ephemeral range covers them all.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        chosen: int = sock.getsockname()[1]
        return chosen


def http_status(url: str) -> int | None:
    """Return the HTTP status of a GET, or None while nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - fixed local URL
            status: int = response.status
            return status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return None


def wait_for_ok(url: str, process: subprocess.Popen[bytes]) -> int | None:
    """Poll a URL until it answers 200, the process exits, or the startup budget runs out."""
    deadline = time.monotonic() + STARTUP_SECONDS
    status = None
    while time.monotonic() < deadline and process.poll() is None:
        status = http_status(url)
        if status == 200:
            break
        time.sleep(0.2)
    return status


def serve_probe_stop(
    argv: list[str],
    *,
    cwd: Path,
    env: dict[str, str],
    port: int,
    log: Path,
    user: int | None = None,
    group: int | None = None,
) -> ServerRun:
    """Start `argv`, GET each probe on `port` until 200, then send SIGTERM and wait for exit."""
    with log.open("wb") as sink:
        server = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            user=user,
            group=group,
        )
        try:
            statuses = {
                path: wait_for_ok(f"http://127.0.0.1:{port}{path}", server) for path in PROBES
            }
            server.send_signal(signal.SIGTERM)
            exit_code = server.wait(timeout=SHUTDOWN_SECONDS)
        finally:
            if server.poll() is None:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()
    return ServerRun(statuses, exit_code, log.read_text(errors="replace"))
