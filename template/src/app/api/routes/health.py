"""Kubernetes probes: ``/livez`` (the process answers) and ``/readyz`` (it can serve traffic)."""

from typing import Literal

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from app.api.deps import app_state
from app.api.errors import ErrorBody, error_response
from app.core.concurrency import deadline
from app.core.db import failure_fields, ping

router = APIRouter(tags=["health"])
_log = structlog.get_logger(__name__)

_NO_STORE = {"cache-control": "no-store"}


class Health(BaseModel):
    """A passing probe."""

    status: Literal["ok"] = "ok"


@router.get("/livez", response_model=Health)
async def livez() -> JSONResponse:
    """Answer 200 while the event loop runs; never touches the database.

    A database outage must not make Kubernetes restart every replica.
    """
    return JSONResponse({"status": "ok"}, headers=_NO_STORE)


@router.get("/readyz", response_model=Health, responses={503: {"model": ErrorBody}})
async def readyz(request: Request) -> JSONResponse:
    """Answer 200 when the database answers in time, 503 while draining or when it does not."""
    state = app_state(request)
    if state["lifecycle"].draining:
        return error_response(request, 503, "shutting down", code="draining", headers=_NO_STORE)
    try:
        async with deadline(state["settings"].server.readiness_timeout):
            await ping(state["engine"])
    except Exception as error:  # noqa: BLE001 -- any failure means "not ready", never a 500
        _log.warning("readiness.db_failed", **failure_fields(error))
        return error_response(
            request, 503, "database unreachable", code="db_unavailable", headers=_NO_STORE
        )
    return JSONResponse({"status": "ok"}, headers=_NO_STORE)
