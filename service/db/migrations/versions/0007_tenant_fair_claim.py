"""fair claim: due recipients by tenant and priority, for the claim's per-tenant seeks

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

# The same predicate as ix_recipients_due: only rows a claim can take are in the index.
_CLAIMABLE = "status IN ('scheduled', 'queued', 'deferred')"


def upgrade() -> None:
    op.create_index(
        "ix_recipients_tenant_due",
        "recipients",
        ["tenant_id", "priority", "next_attempt_at"],
        unique=False,
        sqlite_where=sa.text(_CLAIMABLE),
        postgresql_where=sa.text(_CLAIMABLE),
    )


def downgrade() -> None:
    op.drop_index("ix_recipients_tenant_due", table_name="recipients")
