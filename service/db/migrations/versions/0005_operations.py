"""operations: trace context on messages, delivery pauses, retention indexes

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_FINISHED = "status IN ('succeeded', 'failed', 'cancelled')"


def upgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("traceparent", sa.String(length=55), nullable=True))
    op.create_table(
        "delivery_pauses",
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("value", sa.String(length=255), nullable=False),
        sa.Column("reason", sa.String(length=500), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("kind", "value"),
    )
    op.create_index(
        "ix_messages_body_created_at",
        "messages",
        ["created_at"],
        sqlite_where=sa.text("mime IS NOT NULL"),
        postgresql_where=sa.text("mime IS NOT NULL"),
    )
    op.create_index("ix_attempts_started_at", "attempts", ["started_at"])
    op.create_index("ix_events_created_at", "events", ["created_at"])
    op.create_index(
        "ix_webhook_deliveries_finished",
        "webhook_deliveries",
        ["updated_at"],
        sqlite_where=sa.text(_FINISHED),
        postgresql_where=sa.text(_FINISHED),
    )


def downgrade() -> None:
    op.drop_index("ix_webhook_deliveries_finished", table_name="webhook_deliveries")
    op.drop_index("ix_events_created_at", table_name="events")
    op.drop_index("ix_attempts_started_at", table_name="attempts")
    op.drop_index("ix_messages_body_created_at", table_name="messages")
    op.drop_table("delivery_pauses")
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_column("traceparent")
