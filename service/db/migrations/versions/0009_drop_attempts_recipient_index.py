"""attempts: no index on recipient_id

No query reads attempts by recipient (a message's attempts are found by message_id, and
recipients are never deleted, so the foreign key needs no index to check a delete). The
index only cost a B-tree insert per delivery attempt.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_attempts_recipient_id", table_name="attempts")


def downgrade() -> None:
    op.create_index("ix_attempts_recipient_id", "attempts", ["recipient_id"], unique=False)
