"""Ledger endpoints: accounts and transfers."""

from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query, Request, Response
from fastapi.responses import JSONResponse

from app.api.deps import app_state
from app.api.errors import ErrorBody, error_response
from app.ledger import service
from app.ledger.schemas import (
    MAX_ID,
    AccountCreate,
    AccountOut,
    AccountPage,
    BalanceOut,
    TransferCreate,
    TransferOut,
)

router = APIRouter(tags=["ledger"])
# Routes take the engine and sessionmaker from `app_state(request)`: they need the request
# anyway (for error bodies), and FastAPI would solve a declared dependency on every request.
# `EngineDep` in app.api.deps serves routes that do not take the request.

REPLAYED_HEADER = "idempotent-replayed"
"""Set to ``true`` on a response answered from an earlier request with the same key."""


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    # Documents the one error shape, replacing FastAPI's own 422 schema.
    return {status: {"model": ErrorBody} for status in (*statuses, 422)}


# A body that is not JSON at all is a 400, before validation (422) can run.
_BODY_ERRORS = (400,)


def _refused(request: Request, error: service.LedgerError) -> JSONResponse:
    return error_response(request, error.status, error.message, code=error.code)


@router.post(
    "/accounts", status_code=201, response_model=AccountOut, responses=_errors(*_BODY_ERRORS)
)
async def create_account(request: Request, body: AccountCreate) -> AccountOut | JSONResponse:
    """Open an account in one currency, with an optional opening balance."""
    try:
        return await service.create_account(app_state(request)["sessionmaker"], body)
    except service.LedgerError as error:
        return _refused(request, error)


@router.get("/accounts", response_model=AccountPage, responses=_errors())
async def list_accounts(
    request: Request,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
    cursor: Annotated[
        str | None,
        Query(pattern=r"^[0-9]{1,19}$", description="next_cursor of the previous page"),
    ] = None,
) -> AccountPage | JSONResponse:
    """List accounts in id order, each with its latest transfers (keyset pagination)."""
    after = int(cursor) if cursor is not None else None
    if after is not None and after > MAX_ID:
        return error_response(request, 422, "cursor is out of range", code="validation_error")
    return await service.list_accounts(app_state(request)["engine"], after=after, limit=limit)


@router.get("/accounts/{account_id}", response_model=AccountOut, responses=_errors(404))
async def get_account(
    request: Request,
    account_id: Annotated[int, Path(ge=1, le=MAX_ID)],
) -> AccountOut | JSONResponse:
    """Read one account with its latest transfers, newest first."""
    try:
        return await service.get_account(app_state(request)["engine"], account_id)
    except service.LedgerError as error:
        return _refused(request, error)


@router.get("/accounts/{account_id}/balance", response_model=BalanceOut, responses=_errors(404))
async def get_balance(
    request: Request,
    account_id: Annotated[int, Path(ge=1, le=MAX_ID)],
) -> BalanceOut | JSONResponse:
    """Read one account's balance (one primary-key select)."""
    try:
        return await service.get_balance(app_state(request)["engine"], account_id)
    except service.LedgerError as error:
        return _refused(request, error)


@router.post(
    "/transfers",
    status_code=201,
    response_model=TransferOut,
    responses=_errors(*_BODY_ERRORS, 404, 409),
)
async def create_transfer(
    request: Request,
    body: TransferCreate,
    idempotency_key: Annotated[
        str,
        Header(
            alias="Idempotency-Key",
            min_length=1,
            max_length=200,
            pattern=r"^[\x21-\x7e]+$",
            description="A unique key the client chooses (a UUID); retries with it never pay twice",
        ),
    ],
) -> Response:
    """Move money between two accounts of one currency, exactly once per Idempotency-Key.

    A retry with the same key and body answers the original response again (with the
    ``Idempotent-Replayed: true`` header); the same key with another body is a 409.
    """
    try:
        result = await service.create_transfer(
            app_state(request)["sessionmaker"], idempotency_key, body
        )
    except service.LedgerError as error:
        return _refused(request, error)
    headers = {REPLAYED_HEADER: "true"} if result.replayed else None
    return Response(result.body, status_code=201, media_type="application/json", headers=headers)
