# expect: service-test tests/unit/test_code_rules.py app.transfer_without_transaction:
# mypy: ignore-errors
"""Money moved in two commits: a crash between them debits one account and credits no one."""

from decimal import Decimal

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession


async def transfer(session: AsyncSession, source: int, target: int, amount: Decimal) -> None:
    """Move `amount` from one account to another."""
    debit = "UPDATE accounts SET balance = balance - :amount WHERE id = :id"
    await session.execute(text(debit), {"amount": amount, "id": source})
    await session.commit()
    credit = "UPDATE accounts SET balance = balance + :amount WHERE id = :id"
    await session.execute(text(credit), {"amount": amount, "id": target})
    await session.commit()
