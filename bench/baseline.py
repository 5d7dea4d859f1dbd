"""The baseline services the harness measures keel against; started as a script, never imported.

This file runs inside the rendered service's runtime venv, so it may import only what the
service itself ships (FastAPI, uvicorn, SQLAlchemy, asyncpg). Every variant serves on uvloop and
httptools with no middleware and no access log:

- ``bare``: ``GET /livez`` answering exactly what keel's ``/livez`` answers.
- ``pool``: the same database read as keel's read endpoint, through an async SQLAlchemy engine
  with a pool of keel's size and no pre-ping. For the example API's ``GET /accounts/{id}``
  it calls the example's own query function (the rendered ``app`` package is installed in the
  venv); for ``/readyz`` it runs the same ``SELECT 1``.
- ``naive``: the same read, opening (and closing) a new connection for every request.

SQLAlchemy is imported only by the database variants, so the resident memory of ``bare`` is
that of FastAPI and uvicorn alone.
"""

from __future__ import annotations

import argparse
import importlib
import json
import typing
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import BaseModel

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

_NO_STORE = {"cache-control": "no-store"}


class Health(BaseModel):
    """What keel's probes answer."""

    status: str = "ok"


def bare_app() -> FastAPI:
    """Return the smallest FastAPI app serving keel's ``/livez`` answer."""
    app = FastAPI()

    @app.get("/livez", response_model=Health)
    async def livez() -> JSONResponse:
        return JSONResponse({"status": "ok"}, headers=_NO_STORE)

    return app


def db_app(
    url: str, read: dict[str, Any], *, pooled: bool, pool_size: int, overflow: int
) -> FastAPI:
    """Return an app with one read endpoint at ``read["path"]``."""
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine
    from sqlalchemy.pool import NullPool

    state: dict[str, AsyncEngine] = {}

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if pooled:
            engine = create_async_engine(
                url, pool_size=pool_size, max_overflow=overflow, pool_pre_ping=False
            )
        else:
            engine = create_async_engine(url, poolclass=NullPool)
        state["engine"] = engine
        yield
        await engine.dispose()

    app = FastAPI(lifespan=lifespan)
    if read["kind"] == "ping":
        # keel's /readyz: one SELECT 1 through the engine.
        @app.get(read["path"], response_model=Health)
        async def ping() -> JSONResponse:
            async with state["engine"].connect() as connection:
                await connection.execute(text("SELECT 1"))
            return JSONResponse({"status": "ok"}, headers=_NO_STORE)

    else:
        # The example API's read: call the very function keel's route calls, so the SQL and
        # the response model are identical and only what keel wraps around them differs.
        module, _, name = read["call"].partition(":")
        query = getattr(importlib.import_module(module), name)
        returns = typing.get_type_hints(query)["return"]

        @app.get(read["path"], response_model=returns)
        async def by_id(item_id: int) -> Any:
            return await query(state["engine"], item_id)

    return app


def main() -> None:
    """Parse the command line and serve until SIGTERM."""
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=["bare", "pool", "naive"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--db-url", default="")
    parser.add_argument("--read", default="{}", help="JSON: kind, path and (for pk) sql")
    parser.add_argument("--pool-size", type=int, default=10)
    parser.add_argument("--max-overflow", type=int, default=0)
    args = parser.parse_args()
    if args.kind == "bare":
        app = bare_app()
    else:
        app = db_app(
            args.db_url,
            json.loads(args.read),
            pooled=args.kind == "pool",
            pool_size=args.pool_size,
            overflow=args.max_overflow,
        )
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
