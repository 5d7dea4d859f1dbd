"""The uvicorn server with graceful drain: SIGTERM first fails readiness, then stops."""

import signal
import sys
import time
from types import FrameType

import structlog
import uvicorn
from fastapi import FastAPI

from app.core.config import Settings
from app.core.lifecycle import Lifecycle

_log = structlog.get_logger(__name__)

# Seconds within which a second SIGINT counts as the first one delivered again. Ctrl-C reaches the
# terminal's whole foreground process group, and a wrapper in that group (`uv run`, a shell, a
# process manager) may pass the same interrupt on to the service a moment later; that copy must
# not turn a graceful stop into a forced one.
SAME_INTERRUPT = 0.5


class DrainingServer(uvicorn.Server):
    """A uvicorn server that drains before it stops.

    On the first SIGTERM or SIGINT the process starts draining: ``/readyz`` answers
    503 while requests are still served, so the load balancer takes the replica out
    of rotation. After ``drain_delay`` seconds uvicorn's own shutdown runs: it closes
    the listener, gives in-flight requests ``timeout_graceful_shutdown`` seconds, then
    runs the lifespan shutdown. A second signal exits at once, except a SIGINT within
    `SAME_INTERRUPT` seconds of a first SIGINT, which is that Ctrl-C delivered twice. The
    process then exits with status 0: the signal is not re-raised as plain uvicorn does.
    """

    def __init__(self, config: uvicorn.Config, *, lifecycle: Lifecycle, drain_delay: float):
        super().__init__(config)
        self.lifecycle = lifecycle
        self.drain_delay = drain_delay
        self._first_signal: int | None = None  # set by the first SIGTERM or SIGINT
        self._first_at = 0.0
        self._drain_logged = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """Start draining on the first signal, exit on the second (see the class docstring).

        Runs as a signal handler, so it only sets flags: logging here could deadlock on
        a lock the interrupted code holds.

        Args:
            sig: The signal number.
            frame: The interrupted frame (unused).
        """
        now = time.monotonic()
        if self._first_signal is not None:
            if sig == self._first_signal == signal.SIGINT and now - self._first_at < SAME_INTERRUPT:
                return  # the first Ctrl-C, delivered twice
            self.should_exit = True
            self.force_exit = True
            return
        self._first_signal = sig
        self._first_at = now
        self.lifecycle.begin_drain()

    async def on_tick(self, counter: int) -> bool:
        """Stop the main loop once the drain delay has passed (called every 0.1 s).

        Args:
            counter: Tick counter maintained by uvicorn.

        Returns:
            True when the server should shut down.
        """
        if self._first_signal is not None and not self.should_exit:
            if not self._drain_logged:
                self._drain_logged = True
                _log.info(
                    "server.draining",
                    drain_delay=self.drain_delay,
                    shutdown_timeout=self.config.timeout_graceful_shutdown,
                )
            if self.lifecycle.drained_for() >= self.drain_delay:
                self.should_exit = True
        return await super().on_tick(counter)


def _lifecycle_of(app: FastAPI) -> Lifecycle:
    lifecycle = getattr(app.state, "lifecycle", None)
    if not isinstance(lifecycle, Lifecycle):
        raise TypeError("the app must be built by app.main.create_app")
    return lifecycle


def create_server(app: FastAPI, settings: Settings) -> DrainingServer:
    """Configure uvicorn (uvloop, httptools, our logging) for ``app``.

    Args:
        app: An application built by `app.main.create_app`.
        settings: Supplies host, port, log level and the shutdown timings.

    Returns:
        A server; call ``run()`` to serve until a signal stops it.
    """
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop" if sys.platform != "win32" else "asyncio",
        http="httptools",
        lifespan="on",
        # Logging is configured by app.core.log; RequestContextMiddleware logs access.
        log_config=None,
        log_level=settings.log.level.lower(),
        access_log=False,
        # Typed as int, but only used as an asyncio.wait_for timeout, where a float works.
        timeout_graceful_shutdown=settings.server.shutdown_timeout,  # type: ignore[arg-type]
        server_header=False,
    )
    return DrainingServer(
        config, lifecycle=_lifecycle_of(app), drain_delay=settings.server.drain_delay
    )


def serve(app: FastAPI, settings: Settings) -> None:
    """Serve ``app`` until SIGTERM/SIGINT, then drain and shut down gracefully.

    Args:
        app: An application built by `app.main.create_app`.
        settings: The settings the app was built with.
    """
    create_server(app, settings).run()
