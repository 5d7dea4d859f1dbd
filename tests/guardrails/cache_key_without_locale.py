# expect: pytest must name locale
# mypy: ignore-errors
"""A cache key that leaves out the locale: German users get the French page."""

from app.core.cache import Cache


async def test_greeting_is_cached_per_product() -> None:
    """The greeting is cached under the product id alone."""
    cache: Cache[str] = Cache("greetings", max_entries=10, ttl=60, requires=("locale",))

    async def load() -> str:
        return "Bonjour"

    greeting = await cache.get_or_load(cache.key("sku-1"), load)

    assert greeting == "Bonjour"
