"""Request and response bodies of the webhook endpoints API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from service.webhooks.events import EVENT_TYPES

_EVENTS_DOC = (
    "Event types to deliver; empty means every type except the opt-in message.queued and "
    "message.scheduled. Known types: " + ", ".join(sorted(EVENT_TYPES)) + "."
)


class WebhookCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(max_length=2000, description="http(s) URL that receives signed POSTs.")
    events: list[str] = Field(default_factory=list, max_length=50, description=_EVENTS_DOC)
    description: str = Field(default="", max_length=500)


class WebhookUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(default=None, max_length=2000)
    events: list[str] | None = Field(default=None, max_length=50, description=_EVENTS_DOC)
    description: str | None = Field(default=None, max_length=500)
    enabled: bool | None = Field(
        default=None,
        description="false pauses delivery (pending deliveries are cancelled; replay later); "
        "true re-enables an endpoint that was disabled.",
    )


class WebhookOut(BaseModel):
    id: str
    url: str
    description: str
    events: list[str]
    enabled: bool
    disabled_reason: str | None = None
    created_at: str | None
    updated_at: str | None
    failing_since: str | None = Field(
        default=None, description="Start of the current run of failed attempts, if any."
    )


class WebhookCreated(WebhookOut):
    secret: str = Field(description="whsec_ signing secret. Shown only in this response.")


class WebhookList(BaseModel):
    data: list[WebhookOut]


class SecretRotated(BaseModel):
    secret: str = Field(description="The new whsec_ secret. Shown only in this response.")
    previous_secrets_expire_at: str | None = Field(
        description="Until then the old secret signs too (one more v1 entry per request)."
    )


class TestQueued(BaseModel):
    delivery_id: str
    webhook_id: str


class WebhookAttemptOut(BaseModel):
    number: int
    at: str | None
    status_code: int | None
    latency_ms: float
    error: str | None
    response: str | None = Field(description="The first 1000 characters of the response body.")


class WebhookDeliveryOut(BaseModel):
    id: str
    event_id: int | None
    event_type: str
    webhook_id: str = Field(description="The webhook-id header; the same on every retry.")
    status: str = Field(description="pending | delivering | succeeded | failed | cancelled")
    attempts: int
    next_attempt_at: str | None
    last_status_code: int | None
    last_error: str | None
    last_latency_ms: float | None
    created_at: str | None
    attempt_log: list[WebhookAttemptOut]


class WebhookDeliveryList(BaseModel):
    data: list[WebhookDeliveryOut]
    next_cursor: str | None


class ReplayRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    since: datetime | None = Field(default=None, description="RFC 3339 time; events from then.")
    since_event_id: int | None = Field(
        default=None, ge=1, description="Events with this id and later (data.event_id)."
    )


class ReplayQueued(BaseModel):
    count: int = Field(description="How many deliveries were queued.")


class WebhookEvent(BaseModel):
    """The body of every webhook request."""

    type: str
    timestamp: str = Field(description="RFC 3339 time of the state change.")
    data: dict[str, Any] = Field(
        description="message_id, recipient_id, recipient, status, reason, attempt, smtp "
        "{code, enhanced_code, reply, stage}, possible_duplicate, next_attempt_at, tags, "
        "metadata, seq (per-message sequence number), event_id."
    )
