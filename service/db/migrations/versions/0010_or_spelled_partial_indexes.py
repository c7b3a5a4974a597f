"""partial indexes on status sets: conditions spelled as ORs of equalities

SQLite builds a temporary B-tree to evaluate ``status IN ('a', 'b', 'c')``, and a partial
index evaluates its condition for every row written: four times per settled recipient.
The ORs say the same and cost a few comparisons (see service/db/status_sets.py). The
queries that use these indexes repeat the new conditions.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

# (name, table, columns, old condition, new condition); frozen here, as a migration is.
_INDEXES = [
    (
        "ix_recipients_due",
        "recipients",
        ["priority", "next_attempt_at"],
        "status IN ('scheduled', 'queued', 'deferred')",
        "status = 'scheduled' OR status = 'queued' OR status = 'deferred'",
    ),
    (
        "ix_recipients_tenant_due",
        "recipients",
        ["tenant_id", "priority", "next_attempt_at"],
        "status IN ('scheduled', 'queued', 'deferred')",
        "status = 'scheduled' OR status = 'queued' OR status = 'deferred'",
    ),
    (
        "ix_webhook_deliveries_finished",
        "webhook_deliveries",
        ["updated_at"],
        "status IN ('succeeded', 'failed', 'cancelled')",
        "status = 'succeeded' OR status = 'failed' OR status = 'cancelled'",
    ),
]


def _recreate(new: bool) -> None:
    for name, table, columns, old_condition, new_condition in _INDEXES:
        where = sa.text(new_condition if new else old_condition)
        op.drop_index(name, table_name=table)
        op.create_index(name, table, columns, sqlite_where=where, postgresql_where=where)


def upgrade() -> None:
    _recreate(new=True)


def downgrade() -> None:
    _recreate(new=False)
