"""The ledger's HTTP boundary: pydantic models; money travels as decimal strings, never floats."""

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from app.core.money import MINOR_UNITS

MAX_ID = 2**63 - 1
"""Ids are 64-bit: a larger number cannot name a row and must not reach SQL."""

type AccountId = Annotated[int, Field(ge=1, le=MAX_ID)]
type DecimalString = Annotated[
    str,
    # Up to 15 digits before the point and 4 after: what a NUMERIC(19, 4) column holds.
    # The currency's own number of decimals is checked by the service (a clear 422).
    StringConstraints(pattern=r"^[0-9]{1,15}(\.[0-9]{1,4})?$"),
    Field(examples=["12.50"], description="A non-negative decimal number as a string"),
]
type CurrencyCode = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Z]{3}$"),
    Field(
        examples=["EUR"],
        description="ISO 4217 code of a currency listed in app.core.money.MINOR_UNITS",
        json_schema_extra={"enum": sorted(MINOR_UNITS)},
    ),
]


class _Request(BaseModel):
    # An unknown field is a client bug (a typo in "amount" must not become a default).
    model_config = ConfigDict(extra="forbid", frozen=True)


class AccountCreate(_Request):
    """Open an account, optionally with an opening deposit."""

    owner: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
    currency: CurrencyCode
    opening_balance: DecimalString = "0"


class TransferCreate(_Request):
    """Move ``amount`` from one account to another of the same currency."""

    from_account_id: AccountId
    to_account_id: AccountId
    amount: DecimalString
    currency: CurrencyCode


class TransferOut(BaseModel):
    """A committed transfer."""

    id: int
    from_account_id: int
    to_account_id: int
    amount: str
    currency: str
    created_at: datetime


class AccountOut(BaseModel):
    """An account with its latest transfers, newest first."""

    id: int
    owner: str
    currency: str
    balance: str
    created_at: datetime
    latest_transfers: list[TransferOut]


class BalanceOut(BaseModel):
    """An account's balance now: the one-row read a client polls."""

    account_id: int
    currency: str
    balance: str


class AccountPage(BaseModel):
    """One page of accounts in id order; pass ``next_cursor`` as ``cursor`` for the next one."""

    items: list[AccountOut]
    next_cursor: str | None
