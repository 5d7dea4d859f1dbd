"""What the service puts on the wire: one write per sized response, nothing held back.

Nothing a client waits for is delayed: streams, ``HEAD``, ``100 Continue`` and pipelined
requests are answered as plain uvicorn answers them.
"""

import socket
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.helpers import (
    SLOW_SERVER,
    ServerProcess,
    process_env,
    running_server,
    wait_until_ready,
)

pytestmark = pytest.mark.slow  # real server processes over real sockets

LIVEZ_BODY = b'{"status":"ok"}'


def _address(server: ServerProcess) -> tuple[str, int]:
    url = urlsplit(server.base_url)
    assert url.hostname is not None
    assert url.port is not None
    return url.hostname, url.port


def _request(method: str, path: str, *extra: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: test", *extra, "", ""]
    return "\r\n".join(lines).encode("ascii")


class _Responses:
    """Reads HTTP/1.1 responses framed by Content-Length off one socket, in order."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buffer = b""

    def _fill(self) -> None:
        chunk = self._sock.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed with {self._buffer[:200]!r} unread")
        self._buffer += chunk

    def next(self, *, head_only: bool = False) -> tuple[int, dict[str, str], bytes]:
        """Return status, headers and body of the next response."""
        while b"\r\n\r\n" not in self._buffer:
            self._fill()
        head, self._buffer = self._buffer.split(b"\r\n\r\n", 1)
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in header_lines:
            name, value = line.split(":", 1)
            headers[name.lower()] = value.strip()
        length = 0 if head_only else int(headers["content-length"])
        while len(self._buffer) < length:
            self._fill()
        body, self._buffer = self._buffer[:length], self._buffer[length:]
        return int(status_line.split()[1]), headers, body


def _write_syscalls(pid: int) -> int:
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("syscw:"):
            return int(line.split()[1])
    raise AssertionError(f"no syscw in /proc/{pid}/io")


@pytest.mark.skipif(not Path("/proc/self/io").exists(), reason="counts writes in Linux's /proc")
def test_a_sized_response_leaves_in_one_write(tmp_path: Path) -> None:
    """Head and body of each response go out in one system call (uvicorn alone makes two)."""
    env = process_env(tmp_path, APP_SERVER__DRAIN_DELAY="0", APP_LOG__ACCESS="false")
    requests = 40

    with running_server(SLOW_SERVER, tmp_path, env) as server:
        wait_until_ready(server.base_url)
        with socket.create_connection(_address(server), timeout=10) as sock:
            responses = _Responses(sock)
            for _ in range(5):  # warm-up: nothing first-time left in the count
                sock.sendall(_request("GET", "/livez"))
                responses.next()
            before = _write_syscalls(server.process.pid)
            answers = []
            for _ in range(requests):
                sock.sendall(_request("GET", "/livez"))
                answers.append(responses.next())
            writes = _write_syscalls(server.process.pid) - before
        assert server.stop() == 0

    assert [(status, body) for status, _, body in answers] == [(200, LIVEZ_BODY)] * requests
    assert all("x-request-id" in headers for _, headers, _ in answers)
    assert writes == requests


def test_a_streamed_response_sends_its_head_before_its_first_chunk(tmp_path: Path) -> None:
    """Only sized responses are held: a stream's head reaches the client at once."""
    env = process_env(tmp_path, APP_SERVER__DRAIN_DELAY="0")

    with running_server(SLOW_SERVER, tmp_path, env) as server:
        wait_until_ready(server.base_url)
        started = time.monotonic()
        with httpx.stream(
            "GET", f"{server.base_url}/slow-stream", params={"seconds": 3}, timeout=10
        ) as response:
            head_after = time.monotonic() - started
            body = response.read()
        body_after = time.monotonic() - started
        assert server.stop() == 0

    assert response.status_code == 200
    assert response.headers["transfer-encoding"] == "chunked"
    assert head_after < 1.5
    assert body == b"first"
    assert body_after >= 3


def test_expect_100_continue_is_answered_before_the_body_is_sent(tmp_path: Path) -> None:
    """``100 Continue`` is not held back: the client sends its body only after it."""
    env = process_env(tmp_path, APP_SERVER__DRAIN_DELAY="0")

    with running_server(SLOW_SERVER, tmp_path, env) as server:
        wait_until_ready(server.base_url)
        with socket.create_connection(_address(server), timeout=5) as sock:
            sock.sendall(
                _request(
                    "POST",
                    "/echo",
                    "Expect: 100-continue",
                    "Content-Type: application/octet-stream",
                    "Content-Length: 5",
                )
            )
            interim = sock.recv(1024)
            sock.sendall(b"hello")
            status, _, body = _Responses(sock).next()
        assert server.stop() == 0

    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert (status, body) == (200, b'{"bytes":5}')


def test_pipelined_head_and_large_responses_arrive_whole_and_in_order(tmp_path: Path) -> None:
    """Four requests in one packet: four whole answers, a HEAD's without a body, in order."""
    env = process_env(tmp_path, APP_SERVER__DRAIN_DELAY="0")
    size = 3 * 1024 * 1024 + 7

    with running_server(SLOW_SERVER, tmp_path, env) as server:
        wait_until_ready(server.base_url)
        with socket.create_connection(_address(server), timeout=10) as sock:
            sock.sendall(
                _request("GET", "/livez")
                + _request("HEAD", "/livez")
                + _request("GET", f"/big?size={size}")
                + _request("GET", "/livez", "Connection: close")
            )
            responses = _Responses(sock)
            first = responses.next()
            head = responses.next(head_only=True)
            large = responses.next()
            last = responses.next()
            trailing = sock.recv(1024)
        assert server.stop() == 0

    assert (first[0], first[2]) == (200, LIVEZ_BODY)
    assert (head[0], head[2]) == (405, b"")
    assert large[0] == 200
    assert large[2] == b"x" * size
    assert (last[0], last[2], last[1]["connection"]) == (200, LIVEZ_BODY, "close")
    assert trailing == b""
