"""bounces: applied bounce reports, the bounce category of recipients, lookup by Message-ID

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "bounce_reports",
        sa.Column("report_message_id", sa.String(length=255), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("received_at", sa.Float(), nullable=False),
        sa.Column("recipient_ids", sa.JSON(), nullable=False),
        sa.Column("raw_size", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("report_message_id"),
    )
    op.create_index("ix_bounce_reports_received_at", "bounce_reports", ["received_at"])
    with op.batch_alter_table("recipients", schema=None) as batch_op:
        batch_op.add_column(sa.Column("bounce_category", sa.String(length=32), nullable=True))
    op.create_index("ix_messages_message_id_header", "messages", ["message_id_header"])


def downgrade() -> None:
    op.drop_index("ix_messages_message_id_header", table_name="messages")
    with op.batch_alter_table("recipients", schema=None) as batch_op:
        batch_op.drop_column("bounce_category")
    op.drop_index("ix_bounce_reports_received_at", table_name="bounce_reports")
    op.drop_table("bounce_reports")
