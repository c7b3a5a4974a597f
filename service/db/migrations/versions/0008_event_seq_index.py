"""event numbers: a message's events indexed by (message_id, seq)

The newest sequence number of a message is read from its events, so a settle no longer
rewrites the messages row; this index replaces the one on message_id alone.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_events_message_seq", "events", ["message_id", "seq"], unique=False)
    op.drop_index("ix_events_message_id", table_name="events")


def downgrade() -> None:
    op.create_index("ix_events_message_id", "events", ["message_id"], unique=False)
    op.drop_index("ix_events_message_seq", table_name="events")
    # Numbering goes back to the messages row alone: bring it up to the events' count.
    op.execute(
        "UPDATE messages SET event_seq = "
        "(SELECT max(seq) FROM events WHERE events.message_id = messages.id) "
        "WHERE event_seq < (SELECT max(seq) FROM events WHERE events.message_id = messages.id)"
    )
