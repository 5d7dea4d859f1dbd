"""Serve the real app plus test-only routes, exactly as ``python -m app`` would.

The production app has no debug routes; shutdown and wire tests start this script
instead, so they exercise the same settings loading, logging and `DrainingServer`.
"""

import asyncio
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse

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


@router.get("/slow-stream")
async def slow_stream(seconds: float) -> StreamingResponse:
    """Stream one chunk, ``seconds`` after the response has started."""

    async def chunks() -> AsyncIterator[bytes]:
        await asyncio.sleep(seconds)
        yield b"first"

    return StreamingResponse(chunks(), media_type="text/plain")


@router.post("/echo")
async def echo(request: Request) -> dict[str, int]:
    """Read the whole request body and say how long it was."""
    return {"bytes": len(await request.body())}


@router.get("/big")
async def big(size: int) -> Response:
    """Answer ``size`` bytes of ``x`` in one sized response."""
    return Response(b"x" * size, media_type="application/octet-stream")


def main() -> None:
    """Start the service with the test-only routes."""
    settings = load_settings_or_exit()
    configure_logging(settings)
    app = create_app(settings)
    app.include_router(router)
    serve(app, settings)


if __name__ == "__main__":
    main()
