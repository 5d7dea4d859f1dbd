"""Start a rendered service, probe its health endpoints, and stop it with SIGTERM."""

from __future__ import annotations

import os
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


def free_port() -> int:
    """Return a TCP port that is free on the loopback interface right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


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
