"""pytest plugin: fail an async test if the event loop was blocked longer than a threshold.

A coroutine that calls ``time.sleep``, a sync HTTP client, a sync database driver or a long
CPU loop stops the whole event loop: every other request in the process waits. Lint
(ruff ASYNC) catches the obvious names; this plugin catches the rest at test time.

While an async test runs, a heartbeat callback is scheduled on its loop every
``INTERVAL`` seconds. If a heartbeat runs later than the threshold, the loop was blocked
for at least that long. A watchdog thread samples the loop thread's stack during such a
stall, so the failure names the line that blocked.

A loop can also run late because its thread was ready but got no CPU: other processes had
both cores (a parallel test run, a shared CI machine). That is not the test's fault, so on
Linux the time the loop's thread spent waiting for a CPU (the second figure of
``/proc/thread-self/schedstat``) is not counted. Time the thread spent in ``time.sleep``, a
blocking system call or waiting for the GIL still counts, except that the kernel may count
the start of a sleep that follows a long run as waiting (a thread that ran ahead of its
share stays queued until it has paid that back: a few milliseconds at equal priorities).
Elsewhere, or without that file, the plain lateness is used.

Garbage collection is not counted either. A full collection stops every thread of the
process for as long as it takes to walk the heap: about 0.1 s in a test process that has
imported the service, whatever the test does, and it runs in whichever test happens to
allocate past the collector's threshold. It is measured as the collecting thread's CPU time
(``gc.callbacks`` and ``time.thread_time``), which holds none of that thread's CPU waits, so
nothing is discounted twice.

Settings:
    ``loop_guard_threshold`` (ini, seconds, default 0.1; 0 turns the guard off), or per test
    ``@pytest.mark.loop_guard(threshold=0.5)``; ``@pytest.mark.loop_guard(threshold=None)``
    turns it off for one test. Async fixtures are not watched, only the test body.
"""

import asyncio
import contextlib
import functools
import gc
import inspect
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable, Coroutine, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

INTERVAL = 0.01
"""Seconds between heartbeats; a stall is measured to within about this much."""

DEFAULT_THRESHOLD = 0.1
"""Seconds the loop may be blocked in one stretch before the test fails."""

SCHEDSTAT = "/proc/thread-self/schedstat"
"""Linux: nanoseconds the calling thread has run, then waited for a CPU, then its slice count."""

_HIDDEN = (str(Path(asyncio.__file__).parent), __file__)

type AsyncTest = Callable[..., Coroutine[Any, Any, object]]


@dataclass(frozen=True, slots=True)
class Stall:
    """One stretch during which the event loop did not run its callbacks."""

    seconds: float
    where: str
    cpu_wait: float = 0.0
    """Seconds the loop's thread waited for a CPU in the same stretch (not in ``seconds``)."""
    collecting: float = 0.0
    """Seconds of garbage collection in the same stretch (not in ``seconds``)."""


class LoopWatch:
    """Measure how late heartbeat callbacks run on an event loop.

    Call ``start`` and ``stop`` from a coroutine running on the watched loop.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, threshold: float) -> None:
        """Prepare a watch; nothing runs until ``start``.

        Args:
            loop: The event loop to watch.
            threshold: Seconds of blocking that count as a stall.
        """
        self.threshold = threshold
        self.stalls: list[Stall] = []
        self._loop = loop
        self._loop_thread = threading.get_ident()
        self._due = 0.0
        self._waited_by_schedule = 0.0
        self._schedstat: int | None = None
        self._collecting = 0.0
        self._collected_by_schedule = 0.0
        self._collection_started = 0.0
        self._where: str | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._stopping = threading.Event()
        self._watchdog = threading.Thread(target=self._sample, name="loop-guard", daemon=True)

    def start(self) -> None:
        """Schedule the first heartbeat and start the watchdog thread."""
        try:
            # Opened here, on the loop's thread, so "thread-self" names that thread.
            self._schedstat = os.open(SCHEDSTAT, os.O_RDONLY)
        except OSError:
            self._schedstat = None
        gc.callbacks.append(self._on_collection)
        self._schedule(self._cpu_wait())
        self._watchdog.start()

    def stop(self) -> None:
        """Stop watching; a stall still in progress (no await since) is recorded too."""
        if self._handle is not None:
            self._handle.cancel()
        self._check(time.monotonic(), self._cpu_wait())
        with contextlib.suppress(ValueError):  # the test may have reset gc.callbacks itself
            gc.callbacks.remove(self._on_collection)
        self._stopping.set()
        self._watchdog.join()
        if self._schedstat is not None:
            os.close(self._schedstat)
            self._schedstat = None

    def _cpu_wait(self) -> float:
        """Seconds the loop's thread has spent ready to run but without a CPU (0.0 if unknown)."""
        if self._schedstat is None:
            return 0.0
        try:
            fields = os.pread(self._schedstat, 128, 0).split()
            return int(fields[1]) / 1e9
        except (OSError, IndexError, ValueError):
            return 0.0

    def _on_collection(self, phase: str, _info: dict[str, int]) -> None:
        # Called with the GIL held, in the thread that collects, at the start and at the end.
        if phase == "start":
            self._collection_started = time.thread_time()
        else:
            self._collecting += max(0.0, time.thread_time() - self._collection_started)

    def _schedule(self, cpu_wait: float) -> None:
        self._due = time.monotonic() + INTERVAL
        self._waited_by_schedule = cpu_wait
        self._collected_by_schedule = self._collecting
        self._handle = self._loop.call_later(INTERVAL, self._beat)

    def _beat(self) -> None:
        # One read of the counter serves as the end of this stretch and the start of the next.
        cpu_wait = self._cpu_wait()
        self._check(time.monotonic(), cpu_wait)
        self._schedule(cpu_wait)

    def _check(self, now: float, cpu_wait_total: float) -> None:
        # Waiting counted from the schedule, not from the due time: up to INTERVAL more is
        # forgiven than the stall itself holds, well under any useful threshold.
        cpu_wait = max(0.0, cpu_wait_total - self._waited_by_schedule)
        collecting = self._collecting - self._collected_by_schedule
        late = now - self._due - cpu_wait - collecting
        if late > self.threshold:
            where = self._where or "(location not sampled)"
            self.stalls.append(Stall(late, where, cpu_wait, collecting))
        self._where = None

    def _sample(self) -> None:
        # Runs in the watchdog thread: while the loop is stuck, record where it is stuck.
        while not self._stopping.wait(INTERVAL):
            stuck = time.monotonic() - self._due > self.threshold
            if stuck and self._where is None:
                frame = sys._current_frames().get(self._loop_thread)  # a documented CPython API
                if frame is not None:
                    self._where = _describe(traceback.extract_stack(frame))


def _describe(stack: traceback.StackSummary) -> str:
    # Name the innermost line of project code (the test or the service code it calls), and
    # the innermost frame overall when that is deeper, e.g. inside a sync HTTP library.
    frames = [f for f in stack if not f.filename.startswith(_HIDDEN)] or list(stack)
    cwd = str(Path.cwd())
    ours = [f for f in frames if f.filename.startswith(cwd) and ".venv" not in f.filename]
    shown = [ours[-1]] if ours else []
    if not shown or shown[-1] is not frames[-1]:
        shown.append(frames[-1])
    return "\n".join(f"  {_relative(f.filename)}:{f.lineno} in {f.name}: {f.line}" for f in shown)


def _relative(filename: str) -> str:
    path = Path(filename)
    return str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else filename


def _report(stalls: list[Stall], threshold: float) -> str:
    worst = max(stalls, key=lambda stall: stall.seconds)
    waited = f", and {worst.cpu_wait:.3f} s waiting for a CPU not counted" if worst.cpu_wait else ""
    if worst.collecting:
        waited += f", and {worst.collecting:.3f} s of garbage collection not counted"
    return (
        f"event loop blocked for {worst.seconds:.3f} s (loop_guard threshold {threshold} s, "
        f"{len(stalls)} stall(s){waited}); move blocking work off the loop "
        f"(app.core.concurrency, asyncio.to_thread) or await an async API.\n"
        f"Blocked at:\n{worst.where}"
    )


def guard(test: AsyncTest, threshold: float) -> AsyncTest:
    """Wrap an async test so that it fails when its event loop stalls past ``threshold``.

    Args:
        test: The async test function.
        threshold: Seconds of blocking allowed in one stretch.

    Returns:
        An async function with the same name that runs ``test`` under a ``LoopWatch``.
    """

    @functools.wraps(test)
    async def guarded(*args: object, **kwargs: object) -> object:
        watch = LoopWatch(asyncio.get_running_loop(), threshold)
        watch.start()
        try:
            result = await test(*args, **kwargs)
        finally:
            watch.stop()
        if watch.stalls:
            pytest.fail(_report(watch.stalls, threshold), pytrace=False)
        return result

    return guarded


def _threshold(item: pytest.Function) -> float | None:
    marker = item.get_closest_marker("loop_guard")
    if marker is not None:
        value = marker.kwargs.get("threshold", marker.args[0] if marker.args else None)
    else:
        value = item.config.getini("loop_guard_threshold")
    if value is None or float(value) <= 0:
        return None
    return float(value)


def pytest_addoption(parser: pytest.Parser) -> None:
    """Register the ``loop_guard_threshold`` ini option."""
    parser.addini(
        "loop_guard_threshold",
        help="seconds an async test may block its event loop in one stretch (0 = off)",
        type="float",
        default=DEFAULT_THRESHOLD,
    )


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``loop_guard`` marker."""
    config.addinivalue_line(
        "markers",
        "loop_guard(threshold): seconds this async test may block its event loop "
        "(None turns the guard off)",
    )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, object, object]:
    """Run async tests under the loop guard."""
    if not isinstance(item, pytest.Function) or not inspect.iscoroutinefunction(item.obj):
        return (yield)
    threshold = _threshold(item)
    if threshold is None:
        return (yield)
    original = item.obj
    item.obj = guard(original, threshold)
    try:
        return (yield)
    finally:
        item.obj = original
