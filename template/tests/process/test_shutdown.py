import signal
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.helpers import (
    SLOW_SERVER,
    ServerProcess,
    json_lines,
    process_env,
    running_server,
    wait_until_ready,
)

pytestmark = pytest.mark.slow  # real server processes, a drain delay and timeouts


def _start_slow_requests(
    pool: ThreadPoolExecutor, server: ServerProcess, seconds: float, count: int
) -> list[Future[httpx.Response]]:
    url = f"{server.base_url}/slow"
    futures = [
        pool.submit(httpx.get, url, params={"seconds": seconds}, timeout=30) for _ in range(count)
    ]
    time.sleep(0.3)  # let every request reach the handler before the signal
    return futures


@pytest.fixture
def pool() -> ThreadPoolExecutor:
    """Threads for requests that are in flight while the server shuts down."""
    return ThreadPoolExecutor(max_workers=8)


def test_sigterm_drains_then_finishes_in_flight_requests(
    tmp_path: Path, pool: ThreadPoolExecutor
) -> None:
    """SIGTERM: /readyz turns 503 while requests still succeed, then in-flight work ends, exit 0."""
    env = process_env(tmp_path, APP_SERVER__DRAIN_DELAY="1", APP_SERVER__SHUTDOWN_TIMEOUT="10")

    with running_server(SLOW_SERVER, tmp_path, env) as server:
        wait_until_ready(server.base_url)
        in_flight = _start_slow_requests(pool, server, seconds=2, count=5)
        server.process.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        ready_while_draining = httpx.get(f"{server.base_url}/readyz")
        live_while_draining = httpx.get(f"{server.base_url}/livez")
        time.sleep(1.2)  # past the drain delay: the listener is closed
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{server.base_url}/livez")
        results = [future.result() for future in in_flight]
        status = server.process.wait(timeout=20)
        lines = json_lines(server.output())

    events = [line["event"] for line in lines]
    assert status == 0
    assert ready_while_draining.status_code == 503
    assert ready_while_draining.json()["error"]["code"] == "draining"
    assert live_while_draining.status_code == 200
    assert [response.status_code for response in results] == [200] * 5
    assert events.index("server.draining") < events.index("app.stopped")
    last_slow = max(i for i, line in enumerate(lines) if line.get("path") == "/slow")
    assert last_slow < events.index("app.stopped")


def test_shutdown_timeout_cancels_stragglers(tmp_path: Path, pool: ThreadPoolExecutor) -> None:
    """Requests still running after SHUTDOWN_TIMEOUT are cancelled; lifespan shutdown still runs."""
    env = process_env(tmp_path, APP_SERVER__DRAIN_DELAY="0", APP_SERVER__SHUTDOWN_TIMEOUT="0.5")

    with running_server(SLOW_SERVER, tmp_path, env) as server:
        wait_until_ready(server.base_url)
        in_flight = _start_slow_requests(pool, server, seconds=30, count=2)
        started = time.monotonic()
        status = server.stop()
        elapsed = time.monotonic() - started
        results = [future.result() for future in in_flight]
        lines = json_lines(server.output())

    assert status == 0
    assert elapsed < 5
    assert [response.status_code for response in results] == [500, 500]
    assert "app.stopped" in [line["event"] for line in lines]


def test_second_signal_exits_immediately(tmp_path: Path) -> None:
    """A second SIGTERM during the drain delay skips the rest of the graceful shutdown."""
    env = process_env(tmp_path, APP_SERVER__DRAIN_DELAY="60")

    with running_server(SLOW_SERVER, tmp_path, env) as server:
        wait_until_ready(server.base_url)
        server.process.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        started = time.monotonic()
        status = server.stop()
        elapsed = time.monotonic() - started

    assert status == 0
    assert elapsed < 5
