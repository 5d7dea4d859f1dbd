import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal

import pytest

from app.core.cache import Cache, freeze


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        """Return the current fake time in seconds."""
        return self.now


@dataclass(frozen=True)
class Price:
    """An immutable value, cached as it is."""

    sku: str
    amount: Decimal


@dataclass
class MutablePrice:
    """A mutable value, which the cache refuses."""

    sku: str
    amount: Decimal


def make_cache[V](
    *, max_entries: int = 100, ttl: float = 60.0, clock: FakeClock | None = None
) -> Cache[V]:
    """Build a cache with a locale requirement and an optional fake clock."""
    return Cache[V](
        "test", max_entries=max_entries, ttl=ttl, requires=("locale",), clock=clock or FakeClock()
    )


async def test_cache_runs_the_loader_once_for_100_concurrent_misses() -> None:
    """A hundred concurrent misses for one key share a single loader call."""
    cache: Cache[str] = make_cache()
    calls = 0
    release = asyncio.Event()

    async def load() -> str:
        nonlocal calls
        calls += 1
        await release.wait()
        return "value"

    key = cache.key("sku-1", locale="de-DE")
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(cache.get_or_load(key, load)) for _ in range(100)]
        await asyncio.sleep(0)
        release.set()

    assert calls == 1
    assert {task.result() for task in tasks} == {"value"}


async def test_cache_propagates_a_loader_failure_to_every_waiter_and_caches_nothing() -> None:
    """A failing load raises in every concurrent caller, and the next call loads again."""
    cache: Cache[str] = make_cache()
    calls = 0
    release = asyncio.Event()

    async def failing() -> str:
        nonlocal calls
        calls += 1
        await release.wait()
        raise ConnectionError("upstream down")

    async def call() -> BaseException | None:
        try:
            await cache.get_or_load(key, failing)
        except ConnectionError as exc:
            return exc
        return None

    key = cache.key("sku-1", locale="de-DE")
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(call()) for _ in range(10)]
        await asyncio.sleep(0)
        release.set()

    async def succeeding() -> str:
        return "fresh"

    assert calls == 1
    assert all(isinstance(task.result(), ConnectionError) for task in tasks)
    assert len(cache) == 0
    assert await cache.get_or_load(key, succeeding) == "fresh"


async def test_cache_waiters_retry_when_the_loading_caller_is_cancelled() -> None:
    """If the caller running the load is cancelled, a waiter loads the value itself."""
    cache: Cache[str] = make_cache()
    started = asyncio.Event()

    async def slow() -> str:
        started.set()
        await asyncio.sleep(10)
        return "slow"

    async def fast() -> str:
        return "fast"

    key = cache.key("sku-1", locale="de-DE")
    async with asyncio.TaskGroup() as tg:
        leader = tg.create_task(cache.get_or_load(key, slow))
        await started.wait()
        waiter = tg.create_task(cache.get_or_load(key, fast))
        await asyncio.sleep(0)
        leader.cancel()

    assert leader.cancelled()
    assert waiter.result() == "fast"


async def test_cache_never_shares_an_entry_between_two_locales() -> None:
    """Keys for the same id in two locales hold separate values."""
    cache: Cache[str] = make_cache()

    async def german() -> str:
        return "Preis"

    async def french() -> str:
        return "Prix"

    de = await cache.get_or_load(cache.key("sku-1", locale="de-DE"), german)
    fr = await cache.get_or_load(cache.key("sku-1", locale="fr-FR"), french)

    assert (de, fr) == ("Preis", "Prix")
    assert cache.key("sku-1", locale="de-DE") != cache.key("sku-1", locale="fr-FR")
    assert len(cache) == 2


@pytest.mark.parametrize("locale", [None, "missing"], ids=["none", "missing"])
def test_cache_key_refuses_to_leave_out_a_required_input(locale: str | None) -> None:
    """A key without the required locale (absent or None) is refused."""
    cache: Cache[str] = make_cache()
    named = {} if locale == "missing" else {"locale": locale}

    with pytest.raises(TypeError, match="must name locale"):
        cache.key("sku-1", **named)


def test_cache_key_refuses_unhashable_inputs() -> None:
    """A list cannot be part of a key."""
    cache: Cache[str] = make_cache()

    with pytest.raises(TypeError, match="unhashable"):
        cache.key(["sku-1"], locale="de-DE")  # type: ignore[arg-type]  # the point: mypy sees it too


async def test_cache_refuses_a_key_from_another_cache() -> None:
    """A key is bound to the cache that built it."""
    cache: Cache[str] = make_cache()
    other = Cache[str]("other", max_entries=1, ttl=1)

    async def load() -> str:
        return "x"

    with pytest.raises(ValueError, match="other"):
        await cache.get_or_load(other.key("sku-1"), load)


async def test_cache_evicts_the_least_recently_used_entry_past_max_entries() -> None:
    """With room for two, reading `a` and then adding `c` evicts `b`."""
    cache: Cache[str] = make_cache(max_entries=2)
    loads: list[str] = []

    def loader(name: str) -> Callable[[], Awaitable[str]]:
        async def load() -> str:
            loads.append(name)
            return name

        return load

    for name in ("a", "b", "a", "c", "b"):
        await cache.get_or_load(cache.key(name, locale="en"), loader(name))

    assert loads == ["a", "b", "c", "b"]
    assert len(cache) == 2


async def test_cache_reloads_an_entry_after_its_ttl() -> None:
    """An entry is served until its TTL passes and loaded again afterwards."""
    clock = FakeClock()
    cache: Cache[int] = make_cache(ttl=30, clock=clock)
    calls = 0

    async def load() -> int:
        nonlocal calls
        calls += 1
        return calls

    key = cache.key("sku-1", locale="en")
    first = await cache.get_or_load(key, load)
    clock.now += 29
    cached = await cache.get_or_load(key, load)
    clock.now += 2
    reloaded = await cache.get_or_load(key, load)

    assert (first, cached, reloaded) == (1, 1, 2)


async def test_cache_returns_values_callers_cannot_mutate() -> None:
    """Dicts and lists come back read-only, so no caller can change what others see."""
    cache: Cache[Mapping[str, Sequence[int]]] = make_cache()

    async def load() -> dict[str, list[int]]:
        return {"sizes": [1, 2]}

    value = await cache.get_or_load(cache.key("sku-1", locale="en"), load)

    with pytest.raises(TypeError):
        value["sizes"] = [3]  # type: ignore[index]  # the point: Mapping has no __setitem__
    with pytest.raises(AttributeError):
        value["sizes"].append(3)  # type: ignore[attr-defined]  # the point: it is a tuple
    assert value == {"sizes": (1, 2)}


async def test_cache_refuses_to_store_a_mutable_object() -> None:
    """A mutable dataclass is rejected with a message naming the fix."""
    cache: Cache[MutablePrice] = make_cache()

    async def load() -> MutablePrice:
        return MutablePrice("sku-1", Decimal("9.99"))

    with pytest.raises(TypeError, match="cannot cache a mutable MutablePrice"):
        await cache.get_or_load(cache.key("sku-1", locale="en"), load)


def test_freeze_keeps_frozen_dataclasses_and_scalars() -> None:
    """Already-immutable values are returned unchanged."""
    price = Price("sku-1", Decimal("9.99"))

    assert freeze(price) is price
    assert freeze((1, "a", None)) == (1, "a", None)
    assert freeze({1, 2}) == frozenset({1, 2})


@pytest.mark.parametrize(("max_entries", "ttl"), [(0, 1.0), (1, 0.0)], ids=["entries", "ttl"])
def test_cache_rejects_non_positive_bounds(max_entries: int, ttl: float) -> None:
    """An unbounded or never-fresh cache cannot be built."""
    with pytest.raises(ValueError, match="must be"):
        Cache[str]("x", max_entries=max_entries, ttl=ttl)
