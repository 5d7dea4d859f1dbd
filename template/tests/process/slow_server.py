"""Serve the real app plus a test-only ``/slow`` route, exactly as ``python -m app`` would.

The production app has no debug routes; shutdown tests start this script instead, so
they exercise the same settings loading, logging and `DrainingServer`.
"""

import asyncio

from fastapi import APIRouter

from app.__main__ import load_settings_or_exit
from app.core.log import configure_logging
from app.main import create_app
from app.server import serve

router = APIRouter()


@router.get("/slow")
async def slow(seconds: float) -> dict[str, float]:
    """Answer after ``seconds``, like a request still in flight at shutdown."""
    await asyncio.sleep(seconds)
    return {"slept": seconds}


def main() -> None:
    """Start the service with the extra route."""
    settings = load_settings_or_exit()
    configure_logging(settings)
    app = create_app(settings)
    app.include_router(router)
    serve(app, settings)


if __name__ == "__main__":
    main()
