"""Bodies of the sending API: batch, cancel, raw, templates, suppressions, events."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from service.api.schemas import EventOut, Priority, RecipientState


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    messages: list[dict[str, Any]] = Field(
        min_length=1,
        description="Send requests (each one a SendRequest); at most KIRIM_BATCH_MAX.",
        json_schema_extra={"items": {"$ref": "#/components/schemas/SendRequest"}},
    )
    atomic: bool = Field(
        default=False,
        description="true: any invalid message rejects the whole batch (422), nothing stored.",
    )


class FieldErrorOut(BaseModel):
    field: str
    loc: list[str | int]
    message: str


class BatchItem(BaseModel):
    index: int
    id: str | None = None
    status: str | None = Field(default=None, description="Absent when the item was rejected.")
    message_id: str | None = None
    recipients: list[RecipientState] | None = None
    errors: list[FieldErrorOut] | None = None


class BatchResult(BaseModel):
    accepted: int
    rejected: int
    data: list[BatchItem] = Field(description="One result per message, in request order.")


class CancelResult(BaseModel):
    id: str
    status: str = Field(description="The message's status after the cancel.")
    cancelled: list[RecipientState]
    in_flight: list[RecipientState] = Field(
        description="Being handed to SMTP at this moment; they cannot be recalled."
    )
    unchanged: list[RecipientState] = Field(description="Already in a final state.")


class RawSendRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    from_: str = Field(alias="from", max_length=998, description="Envelope sender (MAIL FROM).")
    to: list[str] = Field(min_length=1, max_length=1000, description="Envelope recipients.")
    raw: str = Field(description="The RFC 5322 message, base64 (strict alphabet, padded).")
    tags: list[str] = Field(default_factory=list, max_length=100)
    metadata: dict[str, str] = Field(default_factory=dict)
    send_at: AwareDatetime | None = None
    expires_at: AwareDatetime | None = None
    priority: Priority = "normal"


class TemplateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        min_length=1,
        max_length=100,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$",
        description="Unique per tenant; sends may name the template by it.",
    )
    subject: str = Field(description="Jinja2 source; rendered without escaping.")
    text: str | None = Field(default=None, description="Jinja2 source; no escaping.")
    html: str | None = Field(default=None, description="Jinja2 source; variables autoescaped.")


class TemplateOut(BaseModel):
    id: str
    name: str
    subject: str
    text: str | None
    html: str | None
    variables: list[str] = Field(description="Variables the template uses.")
    created_at: str | None
    updated_at: str | None


class TemplateList(BaseModel):
    data: list[TemplateOut]
    next_cursor: str | None


class SuppressionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: str = Field(max_length=320)
    reason: Literal["bounce", "complaint", "manual"] = "manual"
    detail: str | None = Field(default=None, max_length=1000)


class SuppressionOut(BaseModel):
    email: str
    reason: str
    detail: str | None
    source_message_id: str | None
    created_at: str | None


class SuppressionList(BaseModel):
    data: list[SuppressionOut]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page.")


class EventFeedItem(EventOut):
    message_id: str


class EventList(BaseModel):
    data: list[EventFeedItem]
    next_cursor: str = Field(
        description="The id of the last event returned (or the cursor sent): pass it next time."
    )
