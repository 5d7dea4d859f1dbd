import asyncio
import functools
import threading
import time

import pytest
from structlog.typing import EventDict

from app.core.concurrency import (
    backoff_delay,
    bounded_gather,
    deadline,
    retry,
    run_blocking,
    settle_all,
)


class Tracker:
    """Counts how many calls run at once and records which ones were cancelled."""

    def __init__(self) -> None:
        self.running = 0
        self.peak = 0
        self.cancelled: list[int] = []
        self.finished: list[int] = []

    async def work(self, index: int, seconds: float = 0.01, *, fail: bool = False) -> int:
        """Sleep, optionally fail, and keep the counters."""
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            await asyncio.sleep(seconds)
            if fail:
                raise ValueError(f"call {index} failed")
            self.finished.append(index)
            return index * 10
        except asyncio.CancelledError:
            self.cancelled.append(index)
            raise
        finally:
            self.running -= 1


async def test_bounded_gather_keeps_order_and_limit() -> None:
    """Results come back in input order and never more than `limit` run at once."""
    tracker = Tracker()
    calls = [functools.partial(tracker.work, i, 0.001 * (20 - i)) for i in range(20)]

    results = await bounded_gather(calls, limit=3)

    assert results == [i * 10 for i in range(20)]
    assert tracker.peak == 3


async def test_bounded_gather_first_failure_cancels_siblings() -> None:
    """One failure cancels the calls in flight, starts no new ones, and raises a group."""
    tracker = Tracker()
    calls = [
        functools.partial(tracker.work, 0, 0.01, fail=True),
        functools.partial(tracker.work, 1, 5),
        functools.partial(tracker.work, 2, 5),
        *[functools.partial(tracker.work, i, 5) for i in range(3, 10)],
    ]
    started = time.monotonic()

    with pytest.raises(ExceptionGroup) as caught:
        await bounded_gather(calls, limit=3)

    assert time.monotonic() - started < 1
    assert [str(error) for error in caught.value.exceptions] == ["call 0 failed"]
    assert sorted(tracker.cancelled) == [1, 2]
    assert tracker.running == 0
    assert tracker.finished == []


async def test_bounded_gather_failure_caught_with_except_star() -> None:
    """Callers handle the failure type with except*."""
    tracker = Tracker()
    handled: list[str] = []

    try:
        await bounded_gather([functools.partial(tracker.work, 0, fail=True)], limit=1)
    except* ValueError as group:
        handled = [str(error) for error in group.exceptions]

    assert handled == ["call 0 failed"]


async def test_bounded_gather_empty_and_bad_limit() -> None:
    """No calls gives no results; a limit below 1 is refused."""
    assert await bounded_gather([], limit=2) == []
    with pytest.raises(ValueError, match="limit"):
        await bounded_gather([], limit=0)


async def test_settle_all_runs_everything_then_reports_all_failures() -> None:
    """Every call finishes despite failures; one group holds all failures in input order."""
    tracker = Tracker()
    calls = [
        functools.partial(tracker.work, 0, 0.02, fail=True),
        functools.partial(tracker.work, 1, 0.05),
        functools.partial(tracker.work, 2, 0.01, fail=True),
        functools.partial(tracker.work, 3, 0.03),
    ]

    with pytest.raises(ExceptionGroup) as caught:
        await settle_all(calls)

    assert [str(error) for error in caught.value.exceptions] == ["call 0 failed", "call 2 failed"]
    assert sorted(tracker.finished) == [1, 3]
    assert tracker.cancelled == []


async def test_settle_all_results_and_limit() -> None:
    """Without failures the results come back in order, with the limit respected."""
    tracker = Tracker()
    calls = [functools.partial(tracker.work, i) for i in range(6)]

    results = await settle_all(calls, limit=2)

    assert results == [0, 10, 20, 30, 40, 50]
    assert tracker.peak == 2


async def test_deadline_cancels_the_block() -> None:
    """Work past the deadline is cancelled and TimeoutError raised outside the block."""
    cleaned_up = asyncio.Event()

    async def slow() -> None:
        try:
            await asyncio.sleep(5)
        finally:
            cleaned_up.set()

    started = time.monotonic()
    with pytest.raises(TimeoutError):
        async with deadline(0.05):
            await slow()

    assert time.monotonic() - started < 1
    assert cleaned_up.is_set()


async def test_deadline_lets_fast_work_finish() -> None:
    """Work within the deadline completes normally; None means no deadline."""
    async with deadline(1):
        await asyncio.sleep(0)
    async with deadline(None):
        await asyncio.sleep(0)

    with pytest.raises(ValueError, match="seconds"):
        deadline(-1)


class Flaky:
    """Fails with the given errors, in order, then returns "ok"."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self) -> str:
        """Raise the next error, or succeed."""
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


class SleepRecorder:
    """A sleep that records requested delays instead of waiting."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        """Record the delay."""
        self.delays.append(seconds)


async def test_retry_retries_listed_exception_with_growing_delays(
    logs: list[EventDict],
) -> None:
    """Listed errors are retried with exponential delays and each retry is logged."""
    flaky = Flaky(ConnectionError(), ConnectionError(), ConnectionError())
    sleep = SleepRecorder()

    result = await retry(
        flaky, on=ConnectionError, attempts=4, base_delay=0.1, max_delay=10, jitter=0, sleep=sleep
    )

    assert result == "ok"
    assert flaky.calls == 4
    assert sleep.delays == [0.1, 0.2, 0.4]
    assert [entry["attempt"] for entry in logs if entry["event"] == "retry.scheduled"] == [1, 2, 3]


async def test_retry_does_not_retry_unlisted_exception() -> None:
    """An exception type not in `on` propagates on the first attempt."""
    flaky = Flaky(ValueError("bad input"))
    sleep = SleepRecorder()

    with pytest.raises(ValueError, match="bad input"):
        await retry(flaky, on=ConnectionError, attempts=5, sleep=sleep)

    assert flaky.calls == 1
    assert sleep.delays == []


async def test_retry_gives_up_after_attempts() -> None:
    """After `attempts` failures the last error propagates."""
    flaky = Flaky(*(TimeoutError(str(i)) for i in range(10)))
    sleep = SleepRecorder()

    with pytest.raises(TimeoutError, match="2"):
        await retry(flaky, on=(ConnectionError, TimeoutError), attempts=3, sleep=sleep)

    assert flaky.calls == 3
    assert len(sleep.delays) == 2


def test_backoff_caps_and_jitters() -> None:
    """Delays stop growing at max_delay and jitter adds at most `jitter` seconds."""
    delays = [backoff_delay(n, base_delay=1, max_delay=4, jitter=0.5) for n in range(1, 8)]

    assert all(low <= d <= low + 0.5 for d, low in zip(delays, [1, 2, 4, 4, 4, 4, 4], strict=True))
    assert len(set(delays)) > 1


async def test_retry_rejects_bad_policy() -> None:
    """Nonsensical retry policies are refused before any call."""
    flaky = Flaky()

    with pytest.raises(ValueError, match="attempts"):
        await retry(flaky, on=ConnectionError, attempts=0)

    assert flaky.calls == 0


async def test_run_blocking_runs_off_the_loop() -> None:
    """Blocking work runs in another thread while the loop keeps running."""
    loop_thread = threading.get_ident()
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.005)

    def blocking(seconds: float) -> int:
        time.sleep(seconds)
        return threading.get_ident()

    async with asyncio.TaskGroup() as group:
        ticking = group.create_task(ticker())
        worker_thread = await run_blocking(blocking, 0.15)
        ticking.cancel()

    assert worker_thread != loop_thread
    assert ticks >= 5
