"""Initial revision: the base every later migration builds on.

The service's infrastructure has no tables of its own; this revision creates nothing,
so that the chain starts at a fixed, readable id. The next revision is 0002 and has
``down_revision = "0001"``.

Revision ID: 0001
Revises:
Create Date: 2026-11-30
"""

from collections.abc import Sequence

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply this revision: nothing to create."""


def downgrade() -> None:
    """Revert this revision: nothing to drop."""
