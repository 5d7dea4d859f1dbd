"""Drive load with wrk (pinned to its own CPU) and read its report."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60000.0}
_PERCENTILE = re.compile(r"^\s*(50|75|90|99)%\s+([\d.]+)(us|ms|s|m)\s*$", re.MULTILINE)
_RPS = re.compile(r"^Requests/sec:\s+([\d.]+)", re.MULTILINE)
_TOTAL = re.compile(r"^\s*(\d+) requests in ", re.MULTILINE)
_NON_2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
_SOCKET = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")


@dataclass(frozen=True)
class LoadResult:
    """One wrk run: throughput, latency percentiles (ms) and every kind of failure."""

    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx: int
    connect_errors: int
    """Connections refused or failed to open (after a server closed its listener, say)."""
    socket_errors: int
    """Reads, writes or requests that failed or timed out on an open connection."""
    socket_detail: str = ""
    """wrk's own split of ``socket_errors``: read, write, timeout."""
    cpu_us_per_request: float | None = None
    """Service CPU time (user + system) per request: unlike req/s, not inflated by CPU steal."""
    cpu_user_us_per_request: float | None = None
    """The user-space part of ``cpu_us_per_request``: the service's own code and libraries."""
    cpu_system_us_per_request: float | None = None
    """The kernel's part of ``cpu_us_per_request``: system calls, page faults, network stack."""

    def to_json(self) -> dict[str, Any]:
        """Return the result as plain JSON values."""
        return asdict(self)


def parse_wrk(output: str) -> LoadResult:
    """Read a ``wrk --latency`` report.

    Raises:
        ValueError: The report lacks throughput or latency figures.
    """
    percentiles = {int(m[1]): float(m[2]) * _UNITS[m[3]] for m in _PERCENTILE.finditer(output)}
    rps = _RPS.search(output)
    total = _TOTAL.search(output)
    if rps is None or total is None or not {50, 99} <= percentiles.keys():
        raise ValueError(f"not a wrk --latency report:\n{output}")
    non_2xx = _NON_2XX.search(output)
    socket = _SOCKET.search(output)
    return LoadResult(
        rps=float(rps[1]),
        p50_ms=percentiles[50],
        p99_ms=percentiles[99],
        requests=int(total[1]),
        non_2xx=int(non_2xx[1]) if non_2xx else 0,
        connect_errors=int(socket[1]) if socket else 0,
        socket_errors=sum(map(int, socket.groups()[1:])) if socket else 0,
        socket_detail=(
            f"read {socket[2]}, write {socket[3]}, timeout {socket[4]}" if socket else ""
        ),
    )


def ensure_wrk() -> str:
    """Return wrk's path, installing Debian's package when missing and running as root.

    Raises:
        RuntimeError: wrk is missing and cannot be installed here.
    """
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "wrk"]
        if subprocess.run(install, env=env, capture_output=True, check=False).returncode:
            subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, check=False)
            subprocess.run(install, env=env, capture_output=True, check=False)
        found = shutil.which("wrk")
        if found:
            return found
    raise RuntimeError(
        "the benchmark needs wrk (HTTP load generator): install it with "
        "`sudo apt-get install wrk` (Debian/Ubuntu) or `brew install wrk`, then rerun"
    )


def wrk_command(url: str, *, seconds: float, connections: int, cpu: int | None) -> list[str]:
    """Return the wrk command line: one thread, ``connections`` keep-alive connections."""
    command = [
        ensure_wrk(),
        "--threads=1",
        f"--connections={connections}",
        f"--duration={max(1, round(seconds))}s",
        "--timeout=10s",
        "--latency",
        url,
    ]
    return (["taskset", "--cpu-list", str(cpu)] if cpu is not None else []) + command


def run_wrk(
    url: str, *, seconds: float, connections: int, cpu: int | None, raw: Path | None = None
) -> LoadResult:
    """Run wrk against ``url`` and return its figures; keep the report in ``raw`` if given."""
    done = subprocess.run(
        wrk_command(url, seconds=seconds, connections=connections, cpu=cpu),
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=True,
    )
    if raw is not None:
        raw.write_text(done.stdout + done.stderr)
    return parse_wrk(done.stdout)
