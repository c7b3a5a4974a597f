"""Request and response bodies of the HTTP API (also the OpenAPI document)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

Priority = Literal["high", "normal", "low"]
PRIORITY_VALUE = {"high": 0, "normal": 1, "low": 2}
PRIORITY_NAME = {v: k for k, v in PRIORITY_VALUE.items()}


def rfc3339(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class AttachmentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    filename: str = Field(max_length=255, description="File name shown to the reader.")
    content: str = Field(description="The file, base64-encoded (strict alphabet, padded).")
    content_type: str | None = Field(
        default=None, max_length=128, description="MIME type; application/octet-stream if absent."
    )
    content_id: str | None = Field(
        default=None,
        max_length=200,
        description="Makes the attachment inline, referenced from html as cid:<content_id>.",
    )


class SendRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    from_: str = Field(
        alias="from", max_length=998, description='"a@example.com" or "Name <a@example.com>".'
    )
    to: list[str] = Field(default_factory=list, max_length=1000, description="Recipients.")
    cc: list[str] = Field(default_factory=list, max_length=1000)
    bcc: list[str] = Field(
        default_factory=list, max_length=1000, description="Never shown in headers."
    )
    reply_to: list[str] | str = Field(default_factory=list)
    subject: str | None = Field(
        default=None, max_length=998, description="Required unless a template supplies it."
    )
    text: str | None = Field(default=None, description="Plain-text body.")
    html: str | None = Field(default=None, description="HTML body.")
    headers: dict[str, str] = Field(
        default_factory=dict, description="Extra headers (X-*, List-Unsubscribe, …)."
    )
    attachments: list[AttachmentIn] = Field(default_factory=list, max_length=100)
    tags: list[str] = Field(default_factory=list, max_length=100)
    metadata: dict[str, str] = Field(
        default_factory=dict, description="Your own key/value pairs, echoed in events."
    )
    send_at: AwareDatetime | None = Field(
        default=None,
        description="RFC 3339 with offset; not delivered before this moment (status scheduled).",
    )
    expires_at: AwareDatetime | None = Field(
        default=None,
        description=(
            "RFC 3339 with offset; never delivered after this moment: a recipient still "
            "waiting then ends failed (reason expired) with a message.failed event."
        ),
    )
    priority: Priority = Field(
        default="normal",
        description="Delivery lane: high mail is claimed before any waiting normal or low mail.",
    )
    template: str | None = Field(
        default=None,
        max_length=100,
        description=(
            "A stored template (tpl_… id or name) that supplies subject, text and html; "
            "do not send those fields with it."
        ),
    )
    variables: dict[str, Any] = Field(
        default_factory=dict,
        description="Values for the template's variables; a missing one is a 422.",
    )


class RecipientState(BaseModel):
    id: str
    email: str
    status: str


class SendAccepted(BaseModel):
    id: str = Field(description="Kirim message id (msg_…).")
    status: str
    message_id: str = Field(description="The RFC 5322 Message-ID header of the email.")
    created_at: str
    recipients: list[RecipientState]


class AttemptOut(BaseModel):
    recipient_id: str
    number: int
    started_at: str | None
    duration_ms: float
    outcome: str
    stage: str
    code: int | None
    enhanced_code: str | None
    reply: str | None
    possible_duplicate: bool


class RecipientOut(BaseModel):
    id: str
    email: str
    kind: str
    status: str
    reason: str | None
    attempts: int
    next_attempt_at: str | None
    sent_at: str | None
    possible_duplicate: bool
    last_reply: dict[str, Any] | None
    bounce_category: str | None = Field(
        default=None,
        description="Why a bounce report said delivery failed: mailbox_unknown, mailbox_full,"
        " domain_unknown, policy_block, spam_block, message_too_large, complaint, other.",
    )


class EventOut(BaseModel):
    id: int
    type: str
    seq: int
    created_at: str | None
    recipient_id: str | None
    data: dict[str, Any]


class MessageOut(BaseModel):
    id: str
    status: str
    created_at: str | None
    from_: str = Field(serialization_alias="from")
    subject: str
    message_id: str
    size: int
    tags: list[str]
    metadata: dict[str, Any]
    priority: str
    send_at: str | None = None
    expires_at: str | None = None
    recipients: list[RecipientOut]
    attempts: list[AttemptOut] = Field(default_factory=list)
    events: list[EventOut] = Field(default_factory=list)


class MessageSummary(BaseModel):
    id: str
    status: str
    created_at: str | None
    from_: str = Field(serialization_alias="from")
    subject: str
    tags: list[str]
    recipients: list[RecipientState]


class MessageList(BaseModel):
    data: list[MessageSummary]
    next_cursor: str | None = Field(description="Pass as ?cursor= to get the next (older) page.")


class Health(BaseModel):
    status: str
    database: str | None = None
