# expect: pytest does not support item assignment
# mypy: ignore-errors
"""A caller edits the value it got from the cache, so every later caller sees the edit."""

from app.core.cache import Cache


async def test_a_discount_applies_to_one_request_only() -> None:
    """A per-request discount is written into the price list this request got."""
    cache: Cache[dict[str, int]] = Cache("prices", max_entries=10, ttl=60, requires=("locale",))

    async def load() -> dict[str, int]:
        return {"sku-1": 1000}

    prices = await cache.get_or_load(cache.key("eu", locale="de-DE"), load)
    prices["sku-1"] = 900

    assert prices["sku-1"] == 900
