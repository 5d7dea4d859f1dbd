"""A bounded, expiring, single-flight async cache that hands out immutable values.

The classic cache bugs this module rules out:

- an unbounded dict that grows until the pod is OOM-killed (``max_entries``, LRU eviction);
- stale data served forever (``ttl``);
- a stampede where a hundred concurrent misses run the same expensive load a hundred
  times (single flight: concurrent misses for one key share one load);
- a caller mutating a value that every other caller then sees (values are deep-frozen);
- a key that forgets an input, so users see each other's locale or tenant
  (keys come from ``Cache.key``, which refuses to build a key without the required inputs).
"""

import asyncio
import dataclasses
import enum
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Mapping
from datetime import date, datetime, timedelta
from datetime import time as dt_time
from decimal import Decimal
from types import MappingProxyType
from typing import cast

_SCALARS = (
    type(None),
    bool,
    int,
    float,
    complex,
    str,
    bytes,
    Decimal,
    date,
    datetime,
    dt_time,
    timedelta,
    uuid.UUID,
    enum.Enum,
)


def freeze(value: object) -> object:
    """Return a deeply immutable version of ``value``.

    dicts become read-only ``MappingProxyType`` views of a private copy, lists and tuples
    become tuples, sets become frozensets; scalars, frozen dataclasses and frozen pydantic
    models are returned as they are.

    Args:
        value: The value to freeze.

    Returns:
        An immutable equivalent of ``value``.

    Raises:
        TypeError: If ``value`` (or anything inside it) is of a mutable type that cannot be
            frozen, such as a plain class instance or a non-frozen dataclass.
    """
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, Mapping):
        return MappingProxyType({k: freeze(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return tuple(freeze(item) for item in value)
    if isinstance(value, set | frozenset):
        return frozenset(freeze(item) for item in value)
    if _is_frozen_object(value):
        return value
    raise TypeError(
        f"cannot cache a mutable {type(value).__name__}: return a frozen dataclass, "
        "a frozen pydantic model, or plain dict/list/scalar data (which is frozen for you)"
    )


def _is_frozen_object(value: object) -> bool:
    params = getattr(type(value), "__dataclass_params__", None)
    frozen_dataclass = dataclasses.is_dataclass(value) and bool(getattr(params, "frozen", False))
    model_config = getattr(type(value), "model_config", None)
    frozen_model = isinstance(model_config, Mapping) and bool(model_config.get("frozen", False))
    if not (frozen_dataclass or frozen_model):
        return False
    try:
        hash(value)  # a frozen object with a list inside is not hashable, hence not immutable
    except TypeError:
        return False
    return True


@dataclasses.dataclass(frozen=True, slots=True)
class CacheKey:
    """A cache key built from every input the cached value depends on; see ``Cache.key``."""

    namespace: str
    parts: tuple[Hashable, ...]
    named: tuple[tuple[str, Hashable], ...]


@dataclasses.dataclass(frozen=True, slots=True)
class _Entry[T]:
    value: T
    expires_at: float


class Cache[V]:
    """An in-process async cache: bounded (LRU), expiring (TTL), single-flight, immutable values.

    Example:
        ``prices = Cache[Mapping[str, Decimal]]("prices", max_entries=10_000, ttl=60,
        requires=("locale",))`` then
        ``await prices.get_or_load(prices.key(sku, locale=locale), lambda: fetch(sku, locale))``.

    Declare ``V`` with read-only types (``Mapping``, ``Sequence``, frozen dataclasses) so that
    mypy rejects mutation too; at run time a mutation raises ``TypeError``.
    """

    def __init__(
        self,
        name: str,
        *,
        max_entries: int,
        ttl: float,
        requires: tuple[str, ...] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Create an empty cache.

        Args:
            name: Namespace of the keys; a key from another cache is refused.
            max_entries: Upper bound on stored entries; the least recently used is evicted.
            ttl: Seconds an entry stays fresh.
            requires: Named key inputs every key must carry (for example ``"locale"``).
            clock: Monotonic clock in seconds; tests pass a fake one.

        Raises:
            ValueError: If ``max_entries`` or ``ttl`` is not positive.
        """
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, got {max_entries}")
        if ttl <= 0:
            raise ValueError(f"ttl must be positive, got {ttl}")
        self.name = name
        self.max_entries = max_entries
        self.ttl = ttl
        self.requires = frozenset(requires)
        self._clock = clock
        self._entries: OrderedDict[CacheKey, _Entry[V]] = OrderedDict()
        self._inflight: dict[CacheKey, asyncio.Future[V]] = {}

    def __len__(self) -> int:
        """Return the number of stored entries, fresh or not yet purged."""
        return len(self._entries)

    def key(self, *parts: Hashable, **named: Hashable) -> CacheKey:
        """Build a key from every input the value depends on.

        Args:
            *parts: Positional inputs, such as an id.
            **named: Named inputs, such as ``locale`` or ``tenant``; the ones listed in
                ``requires`` are mandatory and must not be None.

        Returns:
            The key for ``get_or_load``.

        Raises:
            TypeError: If a required input is missing or None, or an input is unhashable.
        """
        missing = sorted(name for name in self.requires if named.get(name) is None)
        if missing:
            raise TypeError(
                f"cache {self.name!r} keys must name {', '.join(missing)}: a key that leaves "
                "out an input serves one user's value to another"
            )
        key = CacheKey(self.name, parts, tuple(sorted(named.items())))
        hash(key)  # fail here, with the caller in the traceback, if an input is unhashable
        return key

    async def get_or_load(self, key: CacheKey, loader: Callable[[], Awaitable[V]]) -> V:
        """Return the cached value for ``key``, loading it once on a miss.

        Concurrent misses for the same key wait for a single call of ``loader``. If the
        loader raises, every waiter gets the exception and nothing is cached.

        Args:
            key: A key from ``self.key``.
            loader: Coroutine function that produces the value.

        Returns:
            The frozen value.

        Raises:
            ValueError: If the key was built by another cache.
        """
        if key.namespace != self.name:
            raise ValueError(f"key from cache {key.namespace!r} used on cache {self.name!r}")
        while True:
            entry = self._lookup(key)
            if entry is not None:
                return entry.value
            pending = self._inflight.get(key)
            if pending is None:
                return await self._load(key, loader)
            try:
                return await asyncio.shield(pending)
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise
                # The caller that ran the load was cancelled, not us: try again.

    def invalidate(self, key: CacheKey) -> None:
        """Forget the entry for ``key``, if any; a load already running is not affected."""
        self._entries.pop(key, None)

    def clear(self) -> None:
        """Forget every entry."""
        self._entries.clear()

    def _lookup(self, key: CacheKey) -> _Entry[V] | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.expires_at <= self._clock():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return entry

    async def _load(self, key: CacheKey, loader: Callable[[], Awaitable[V]]) -> V:
        future: asyncio.Future[V] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            # freeze() turns dict/list/set into read-only equivalents of the declared V.
            value = cast("V", freeze(await loader()))
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # mark it retrieved: no "never retrieved" noise without waiters
            raise
        except BaseException:  # cancelled (or interrupted): waiters retry instead of hanging
            future.cancel()
            raise
        finally:
            del self._inflight[key]
        self._store(key, value)
        future.set_result(value)
        return value

    def _store(self, key: CacheKey, value: V) -> None:
        self._entries[key] = _Entry(value, self._clock() + self.ttl)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
