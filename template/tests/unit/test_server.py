"""`DrainingServer`'s signal handling: drain on the first signal, force on a deliberate second."""

import signal

import pytest

from app import server as server_module
from app.main import create_app
from app.server import SAME_INTERRUPT, DrainingServer, create_server
from tests.conftest import SettingsFactory


class Clock:
    """Stands in for `time.monotonic` inside `app.server`."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        """Return the current fake time."""
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """A clock the test moves by hand."""
    fake = Clock()
    monkeypatch.setattr(server_module, "time", fake)
    return fake


@pytest.fixture
def draining(make_settings: SettingsFactory) -> DrainingServer:
    """A server for the app (never started: only its signal handler is exercised)."""
    settings = make_settings()
    return create_server(create_app(settings), settings)


def test_first_signal_drains_without_stopping(draining: DrainingServer, clock: Clock) -> None:
    """The first signal starts the drain; uvicorn's own shutdown waits for the drain delay."""
    draining.handle_exit(signal.SIGTERM, None)

    assert draining.lifecycle.draining
    assert (draining.should_exit, draining.force_exit) == (False, False)


def test_one_ctrl_c_delivered_twice_stays_graceful(draining: DrainingServer, clock: Clock) -> None:
    """A second SIGINT right after the first (a wrapper passing Ctrl-C on) is not a force-quit."""
    draining.handle_exit(signal.SIGINT, None)
    clock.now += SAME_INTERRUPT / 2
    draining.handle_exit(signal.SIGINT, None)

    assert (draining.should_exit, draining.force_exit) == (False, False)


@pytest.mark.parametrize(
    ("first", "second", "gap"),
    [
        (signal.SIGINT, signal.SIGINT, SAME_INTERRUPT),
        (signal.SIGTERM, signal.SIGTERM, 0.0),
        (signal.SIGINT, signal.SIGTERM, 0.0),
        (signal.SIGTERM, signal.SIGINT, 0.0),
    ],
    ids=["sigint-later", "sigterm-twice", "sigint-then-sigterm", "sigterm-then-sigint"],
)
def test_a_deliberate_second_signal_forces_the_exit(
    draining: DrainingServer, clock: Clock, first: int, second: int, gap: float
) -> None:
    """Any second signal but an immediate repeat of SIGINT exits at once."""
    draining.handle_exit(first, None)
    clock.now += gap
    draining.handle_exit(second, None)

    assert (draining.should_exit, draining.force_exit) == (True, True)
