"""The example domain: a small ledger of accounts and money transfers.

It shows the database practices the way production code uses them: Decimal money in
fixed-point columns, one transaction per transfer with both account rows locked in id
order, idempotency keys that make retries safe, and reads that load a whole page of
related rows in a fixed number of statements. Delete it as described in
``docs/practices/transactions.md`` of the template (or re-answer ``example=false``).
"""
