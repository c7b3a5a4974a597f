"""Database tables (SQLModel). Hot paths use the Core tables (``Model.__table__``).

Times are stored as float seconds since the Unix epoch (UTC) in every ``*_at`` column: the
same representation on SQLite and PostgreSQL, cheap to compare in claim queries, and
rendered as RFC 3339 by the API.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, Column, Index, Integer, LargeBinary, String, Text, text
from sqlmodel import Field, SQLModel

from service.db.status_sets import CLAIMABLE, HOOK_FINISHED, condition

# Alembic and tests share this metadata.
metadata = SQLModel.metadata

# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL wants a 64-bit identity.
_BIG_ID = BigInteger().with_variant(Integer(), "sqlite")

_CLAIMABLE = condition(CLAIMABLE)


class ApiKey(SQLModel, table=True):
    __tablename__ = "api_keys"

    id: str = Field(primary_key=True, max_length=40)
    tenant_id: str = Field(index=True, max_length=64)
    name: str = Field(max_length=200)
    prefix: str = Field(max_length=32, description="Shown in lists; enough to recognise a key.")
    key_hash: str = Field(unique=True, max_length=64, description="SHA-256 hex of the key.")
    scopes: str = Field(default="", max_length=500, description="Space-separated scopes.")
    created_at: float
    expires_at: float | None = None
    revoked_at: float | None = None
    last_used_at: float | None = None


class Message(SQLModel, table=True):
    __tablename__ = "messages"
    __table_args__ = (Index("ix_messages_tenant_id_id", "tenant_id", "id"),)

    id: str = Field(primary_key=True, max_length=40)
    tenant_id: str = Field(max_length=64)
    created_at: float
    sender: str = Field(max_length=320)
    subject: str = Field(sa_column=Column(Text, nullable=False))
    message_id_header: str = Field(max_length=255)
    mime: bytes | None = Field(
        default=None, sa_column=Column(LargeBinary, nullable=True), description="Exact bytes."
    )
    size: int
    smtputf8: bool = False
    tags: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    meta: dict[str, Any] = Field(
        default_factory=dict, sa_column=Column("metadata", JSON, nullable=False)
    )
    send_at: float | None = None
    expires_at: float | None = None
    priority: int = Field(default=1, description="0 high, 1 normal, 2 low.")
    event_seq: int = Field(
        default=0, description="Floor of the last event sequence number (see db/event_seq)."
    )
    traceparent: str | None = Field(
        default=None, max_length=55, description="W3C trace context of the accepting request."
    )


class Recipient(SQLModel, table=True):
    __tablename__ = "recipients"
    __table_args__ = (
        Index(
            "ix_recipients_due",
            "priority",
            "next_attempt_at",
            sqlite_where=text(_CLAIMABLE),
            postgresql_where=text(_CLAIMABLE),
        ),
        # The fair claim finds each tenant's due work per priority through this (0007).
        Index(
            "ix_recipients_tenant_due",
            "tenant_id",
            "priority",
            "next_attempt_at",
            sqlite_where=text(_CLAIMABLE),
            postgresql_where=text(_CLAIMABLE),
        ),
        Index(
            "ix_recipients_lease",
            "lease_expires_at",
            sqlite_where=text("status = 'sending'"),
            postgresql_where=text("status = 'sending'"),
        ),
    )

    id: str = Field(primary_key=True, max_length=40)
    message_id: str = Field(foreign_key="messages.id", index=True, max_length=40)
    tenant_id: str = Field(max_length=64)
    email: str = Field(max_length=320, index=True)
    kind: str = Field(max_length=8)
    status: str = Field(max_length=16)
    priority: int = 1
    attempts: int = 0
    created_at: float
    updated_at: float
    next_attempt_at: float
    deadline: float = Field(description="No attempt starts after this moment.")
    lease_owner: str | None = Field(default=None, max_length=64)
    lease_token: str | None = Field(default=None, max_length=64)
    lease_expires_at: float | None = None
    lease_lost: bool = Field(
        default=False, description="A lease expired mid-attempt: the next try may duplicate."
    )
    possible_duplicate: bool = False
    reason: str | None = Field(default=None, max_length=64)
    last_code: int | None = None
    last_enhanced: str | None = Field(default=None, max_length=16)
    last_reply: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    last_stage: str | None = Field(default=None, max_length=16)
    sent_at: float | None = None


class Attempt(SQLModel, table=True):
    __tablename__ = "attempts"

    id: int | None = Field(
        default=None, sa_column=Column(_BIG_ID, primary_key=True, autoincrement=True)
    )
    # Not indexed: nothing reads attempts by recipient, and recipients are never deleted.
    recipient_id: str = Field(foreign_key="recipients.id", max_length=40)
    message_id: str = Field(index=True, max_length=40)
    number: int
    started_at: float
    duration: float
    outcome: str = Field(max_length=16)
    stage: str = Field(max_length=16)
    code: int | None = None
    enhanced: str | None = Field(default=None, max_length=16)
    reply: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    possible_duplicate: bool = False
    worker: str | None = Field(default=None, max_length=64)


class Event(SQLModel, table=True):
    """The outbox: one row per recipient state change, read by webhooks and clients."""

    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_tenant_id_id", "tenant_id", "id"),
        # A message's events in order; its newest number is one seek (service/db/event_seq).
        Index("ix_events_message_seq", "message_id", "seq"),
    )

    id: int | None = Field(
        default=None, sa_column=Column(_BIG_ID, primary_key=True, autoincrement=True)
    )
    tenant_id: str = Field(max_length=64)
    message_id: str = Field(max_length=40)
    recipient_id: str | None = Field(default=None, max_length=40)
    seq: int
    type: str = Field(max_length=40)
    created_at: float
    data: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


api_keys = ApiKey.__table__  # type: ignore[attr-defined]
messages = Message.__table__  # type: ignore[attr-defined]
recipients = Recipient.__table__  # type: ignore[attr-defined]
attempts = Attempt.__table__  # type: ignore[attr-defined]
events = Event.__table__  # type: ignore[attr-defined]


class WebhookEndpoint(SQLModel, table=True):
    """A subscriber URL of one tenant; ``secrets`` holds every key that currently signs."""

    __tablename__ = "webhook_endpoints"
    __table_args__ = (Index("ix_webhook_endpoints_tenant_id_id", "tenant_id", "id"),)

    id: str = Field(primary_key=True, max_length=40)
    tenant_id: str = Field(max_length=64)
    url: str = Field(sa_column=Column(Text, nullable=False))
    description: str = Field(default="", max_length=500)
    events: list[str] = Field(
        default_factory=list,
        sa_column=Column(JSON, nullable=False),
        description="Event types delivered; empty means the default set.",
    )
    secrets: list[dict[str, Any]] = Field(
        default_factory=list,
        sa_column=Column(JSON, nullable=False),
        description="[{secret, expires_at}]: old and new keys both sign during a rotation.",
    )
    enabled: bool = True
    disabled_reason: str | None = Field(default=None, max_length=200)
    created_at: float
    updated_at: float
    failing_since: float | None = Field(
        default=None, description="Start of the current run of failed attempts."
    )


class WebhookDelivery(SQLModel, table=True):
    """One event for one endpoint (the outbox row the dispatcher claims)."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        Index(
            "ix_webhook_deliveries_due",
            "next_attempt_at",
            sqlite_where=text("status = 'pending'"),
            postgresql_where=text("status = 'pending'"),
        ),
        Index(
            "ix_webhook_deliveries_lease",
            "lease_expires_at",
            sqlite_where=text("status = 'delivering'"),
            postgresql_where=text("status = 'delivering'"),
        ),
        Index("ix_webhook_deliveries_endpoint_id_id", "endpoint_id", "id"),
    )

    # No foreign keys: deleting an endpoint must never fail a concurrent settle's fan-out.
    id: str = Field(primary_key=True, max_length=40)
    endpoint_id: str = Field(max_length=40)
    event_id: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    event_type: str = Field(max_length=40)
    tenant_id: str = Field(max_length=64)
    webhook_id: str = Field(max_length=80, description="The webhook-id header, stable.")
    payload: dict[str, Any] | None = Field(
        default=None,
        sa_column=Column(JSON, nullable=True),
        description="Body of a synthetic event (webhook.test) that has no events row.",
    )
    status: str = Field(max_length=16)
    attempts: int = 0
    next_attempt_at: float
    lease_token: str | None = Field(default=None, max_length=64)
    lease_expires_at: float | None = None
    last_status_code: int | None = None
    last_error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    last_latency: float | None = None
    last_response: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    created_at: float
    updated_at: float


class WebhookAttempt(SQLModel, table=True):
    """One HTTP request of a delivery."""

    __tablename__ = "webhook_attempts"

    id: int | None = Field(
        default=None, sa_column=Column(_BIG_ID, primary_key=True, autoincrement=True)
    )
    delivery_id: str = Field(index=True, max_length=40)
    number: int
    at: float
    status_code: int | None = None
    latency: float
    error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    response: str | None = Field(default=None, sa_column=Column(Text, nullable=True))


webhook_endpoints = WebhookEndpoint.__table__  # type: ignore[attr-defined]
webhook_deliveries = WebhookDelivery.__table__  # type: ignore[attr-defined]
webhook_attempts = WebhookAttempt.__table__  # type: ignore[attr-defined]


class IdempotencyKey(SQLModel, table=True):
    """A client's Idempotency-Key and the response it got, unique per tenant."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (Index("ix_idempotency_keys_expires_at", "expires_at"),)

    tenant_id: str = Field(primary_key=True, max_length=64)
    key: str = Field(primary_key=True, max_length=255)
    fingerprint: str = Field(max_length=64, description="SHA-256 of method, path and body.")
    status: str = Field(max_length=16, description="in_flight or done.")
    response_status: int | None = None
    response_body: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    created_at: float
    expires_at: float


class RateBucket(SQLModel, table=True):
    """A token bucket shared by every process (used on PostgreSQL)."""

    __tablename__ = "rate_buckets"

    bucket: str = Field(primary_key=True, max_length=120)
    tokens: float
    updated_at: float


idempotency_keys = IdempotencyKey.__table__  # type: ignore[attr-defined]
rate_buckets = RateBucket.__table__  # type: ignore[attr-defined]


class Template(SQLModel, table=True):
    """A tenant's reusable subject/text/html with Jinja2 variables."""

    __tablename__ = "templates"
    __table_args__ = (
        Index("ux_templates_tenant_id_name", "tenant_id", "name", unique=True),
        Index("ix_templates_tenant_id_id", "tenant_id", "id"),
    )

    id: str = Field(primary_key=True, max_length=40)
    tenant_id: str = Field(max_length=64)
    name: str = Field(max_length=100)
    subject: str = Field(sa_column=Column(Text, nullable=False))
    text: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    html: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    created_at: float
    updated_at: float


class Suppression(SQLModel, table=True):
    """An address a tenant never sends to again (hard bounce, complaint or by hand)."""

    __tablename__ = "suppressions"
    __table_args__ = (
        Index("ux_suppressions_tenant_id_email", "tenant_id", "email", unique=True),
        Index("ix_suppressions_tenant_id_id", "tenant_id", "id"),
    )

    id: int | None = Field(
        default=None, sa_column=Column(_BIG_ID, primary_key=True, autoincrement=True)
    )
    tenant_id: str = Field(max_length=64)
    email: str = Field(max_length=320, description="Lower-cased address.")
    reason: str = Field(max_length=16, description="bounce, complaint or manual.")
    detail: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    source_message_id: str | None = Field(default=None, max_length=40)
    created_at: float


templates = Template.__table__  # type: ignore[attr-defined]
suppressions = Suppression.__table__  # type: ignore[attr-defined]


class DeliveryPause(SQLModel, table=True):
    """Delivery held for one tenant or destination domain until resumed (claims skip it)."""

    __tablename__ = "delivery_pauses"

    kind: str = Field(primary_key=True, max_length=8, description="tenant or domain.")
    value: str = Field(primary_key=True, max_length=255)
    reason: str = Field(default="", max_length=500)
    created_at: float


delivery_pauses = DeliveryPause.__table__  # type: ignore[attr-defined]

# Retention finds old rows through these; rows leave them as they are pruned.
Index(
    "ix_messages_body_created_at",
    messages.c.created_at,
    sqlite_where=text("mime IS NOT NULL"),
    postgresql_where=text("mime IS NOT NULL"),
)
Index("ix_attempts_started_at", attempts.c.started_at)
Index("ix_events_created_at", events.c.created_at)
Index(
    "ix_webhook_deliveries_finished",
    webhook_deliveries.c.updated_at,
    sqlite_where=text(condition(HOOK_FINISHED)),
    postgresql_where=text(condition(HOOK_FINISHED)),
)


# Bounce handling (migration 0006). Appended to the Core table so the ORM model above is
# unchanged; readers that select(recipients) get it like any other column.
# bounce_category: why a report said the address failed (mailbox_unknown, mailbox_full, …).
recipients.append_column(Column("bounce_category", String(32), nullable=True))
Index("ix_messages_message_id_header", messages.c.message_id_header)


class BounceReportRow(SQLModel, table=True):
    """A bounce or complaint report that was applied, keyed by its own Message-ID so a
    report seen again (crash between commit and mailbox delete) changes nothing twice."""

    __tablename__ = "bounce_reports"

    report_message_id: str = Field(primary_key=True, max_length=255)
    tenant_id: str | None = Field(default=None, max_length=64)
    kind: str = Field(max_length=16, description="bounce, delay or complaint.")
    received_at: float = Field(index=True)
    recipient_ids: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    raw_size: int


bounce_reports = BounceReportRow.__table__  # type: ignore[attr-defined]
