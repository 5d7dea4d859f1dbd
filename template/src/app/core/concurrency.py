"""Structured concurrency on asyncio.TaskGroup: bounded fan-out, settle-all, deadlines, retries.

Every helper owns the tasks it starts: when it returns or raises, none of them is
still running. Use these instead of ``asyncio.gather`` (banned by the linter), whose
failed calls leave their siblings running unobserved.
"""

import asyncio
import random
from collections.abc import Awaitable, Callable, Iterable
from typing import Final

import structlog

type AsyncCall[T] = Callable[[], Awaitable[T]]

_log = structlog.get_logger(__name__)
_jitter_source: Final = random.SystemRandom()


def _check_limit(limit: int) -> None:
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")


async def _run_workers[T](
    calls: list[AsyncCall[T]],
    limit: int,
    run_one: Callable[[int, AsyncCall[T]], Awaitable[None]],
) -> None:
    # `limit` workers share one iterator, so at most `limit` calls are ever in flight and
    # a long input does not create one task per item up front.
    pending = iter(enumerate(calls))

    async def worker() -> None:
        for index, call in pending:
            await run_one(index, call)

    async with asyncio.TaskGroup() as group:
        for _ in range(min(limit, len(calls))):
            group.create_task(worker())


async def bounded_gather[T](calls: Iterable[AsyncCall[T]], *, limit: int) -> list[T]:
    """Run ``calls`` with at most ``limit`` in flight; the first failure cancels the rest.

    Suits reads: once one part failed the combined answer is lost, so the work still
    in flight is cancelled (its ``finally`` blocks run) and nothing new starts.

    Args:
        calls: Zero-argument async callables, e.g. ``functools.partial(fetch, id)``.
        limit: Maximum number of calls running at the same time (at least 1).

    Returns:
        The results, in the order of ``calls``.

    Raises:
        ExceptionGroup: Holds the failure(s); handle it with ``except*``.
        ValueError: ``limit`` is below 1.
    """
    _check_limit(limit)
    jobs = list(calls)
    results: dict[int, T] = {}

    async def run_one(index: int, call: AsyncCall[T]) -> None:
        results[index] = await call()

    await _run_workers(jobs, limit, run_one)
    return [results[index] for index in range(len(jobs))]


async def settle_all[T](calls: Iterable[AsyncCall[T]], *, limit: int | None = None) -> list[T]:
    """Run every call to completion, then report all failures together.

    Suits writes that must not be cut short because a sibling failed.

    Args:
        calls: Zero-argument async callables.
        limit: Maximum number in flight; ``None`` runs them all at once.

    Returns:
        The results in the order of ``calls``, when every call succeeded.

    Raises:
        ExceptionGroup: One group holding every failure, in the order of ``calls``.
        ValueError: ``limit`` is below 1.
    """
    jobs = list(calls)
    if limit is not None:
        _check_limit(limit)
    results: dict[int, T] = {}
    failures: dict[int, Exception] = {}

    async def run_one(index: int, call: AsyncCall[T]) -> None:
        try:
            results[index] = await call()
        except Exception as error:  # noqa: BLE001 -- collected and re-raised as one group below
            failures[index] = error

    await _run_workers(jobs, limit or max(len(jobs), 1), run_one)
    if failures:
        errors = [failures[index] for index in sorted(failures)]
        raise ExceptionGroup(f"{len(errors)} of {len(jobs)} calls failed", errors)
    return [results[index] for index in range(len(jobs))]


def deadline(seconds: float | None) -> asyncio.Timeout:
    """Bound the enclosed block to ``seconds``; on expiry it is cancelled.

    Use it around outbound calls, whose client timeouts bound each phase, not the total.

    Args:
        seconds: Time allowed, at least 0; ``None`` means no deadline.

    Returns:
        An async context manager; leaving it late raises the builtin `TimeoutError`.

    Raises:
        ValueError: ``seconds`` is negative.
    """
    if seconds is not None and not seconds >= 0:
        raise ValueError(f"seconds must be >= 0, got {seconds}")
    return asyncio.timeout(seconds)


def backoff_delay(attempt: int, *, base_delay: float, max_delay: float, jitter: float) -> float:
    """Compute the wait after failed attempt number ``attempt`` (1-based).

    Args:
        attempt: How many attempts have failed so far.
        base_delay: Wait after the first failure, before jitter.
        max_delay: Cap on the exponential part.
        jitter: Upper bound of the uniformly random seconds added, so that many
            clients that failed together do not retry together.

    Returns:
        ``min(max_delay, base_delay * 2 ** (attempt - 1))`` plus up to ``jitter`` seconds.
    """
    exponential = min(max_delay, base_delay * 2.0 ** (attempt - 1))
    return exponential + _jitter_source.uniform(0, jitter)


async def retry[T](  # noqa: PLR0913 -- every knob of a retry policy is a keyword
    call: AsyncCall[T],
    *,
    on: type[Exception] | tuple[type[Exception], ...],
    attempts: int = 3,
    base_delay: float = 0.1,
    max_delay: float = 2.0,
    jitter: float = 0.1,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> T:
    """Call ``call`` until it succeeds, retrying only the exception types in ``on``.

    Retry idempotent operations only (reads, PUTs, writes carrying an idempotency key):
    a timed-out write may have happened. Anything not listed in ``on`` propagates at once.

    Args:
        call: Zero-argument async callable to run.
        on: Exception type(s) that mean "transient, try again".
        attempts: Total number of tries, at least 1.
        base_delay: Wait after the first failure; doubles after each further one.
        max_delay: Cap on the doubling part of the wait.
        jitter: Up to this many random seconds are added to every wait.
        sleep: Awaitable sleep; tests pass a recorder instead of waiting.

    Returns:
        What ``call`` returned on its first successful try.

    Raises:
        ValueError: A policy argument is out of range.
    """
    if attempts < 1 or base_delay < 0 or max_delay < base_delay or jitter < 0:
        raise ValueError("need attempts >= 1 and 0 <= base_delay <= max_delay, jitter >= 0")
    attempt = 1
    while True:
        try:
            return await call()
        except on as error:
            if attempt >= attempts:
                raise
            delay = backoff_delay(
                attempt, base_delay=base_delay, max_delay=max_delay, jitter=jitter
            )
            _log.warning(
                "retry.scheduled",
                attempt=attempt,
                attempts=attempts,
                delay=round(delay, 3),
                error=type(error).__name__,
            )
            await sleep(delay)
            attempt += 1


async def run_blocking[**P, R](func: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
    """Run blocking code in a worker thread so the event loop keeps serving.

    Context variables (the request id bound for logging) are copied into the thread.

    Args:
        func: A blocking callable (file I/O, CPU-bound work, sync-only libraries).
        *args: Positional arguments for ``func``.
        **kwargs: Keyword arguments for ``func``.

    Returns:
        What ``func`` returned.
    """
    return await asyncio.to_thread(func, *args, **kwargs)
