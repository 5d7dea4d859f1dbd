"""Process lifecycle state shared by the server and the readiness probe."""

import time


class Lifecycle:
    """Whether the process is draining: still serving, but asking for no new traffic.

    The server flips it on SIGTERM; ``/readyz`` then answers 503 so the load balancer
    stops routing here before the listener closes.
    """

    def __init__(self) -> None:
        self._drain_started: float | None = None

    @property
    def draining(self) -> bool:
        """True once `begin_drain` was called."""
        return self._drain_started is not None

    def begin_drain(self) -> None:
        """Mark the process as draining; later calls keep the first start time."""
        if self._drain_started is None:
            self._drain_started = time.monotonic()

    def drained_for(self) -> float:
        """Return the seconds since draining began (0 when not draining).

        Returns:
            Elapsed seconds on the monotonic clock.
        """
        if self._drain_started is None:
            return 0.0
        return time.monotonic() - self._drain_started
