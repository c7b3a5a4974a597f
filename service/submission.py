"""Turning a validated draft into the rows of one accepted message."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from service.db.accepts import NewMessage, Rows
from service.domain.envelope import Draft
from service.domain.ids import new_id
from service.domain.mime import build_mime, make_message_id
from service.domain.retry import RetryPolicy
from service.domain.status import Status, summarise


@dataclass(slots=True, init=False)  # a value, not frozen: see service/native.py
class Accepted:
    id: str
    status: str
    created_at: float
    message_id_header: str
    recipients: list[tuple[str, str, str]]  # (recipient id, email, status)

    def __init__(
        self,
        id: str,
        status: str,
        created_at: float,
        message_id_header: str,
        recipients: list[tuple[str, str, str]],
    ) -> None:
        self.id = id
        self.status = status
        self.created_at = created_at
        self.message_id_header = message_id_header
        self.recipients = recipients


def prepare(
    draft: Draft,
    *,
    tenant_id: str,
    now: float,
    policy: RetryPolicy,
    message_id_domain: str,
    send_at: float | None = None,
    expires_at: float | None = None,
    priority: int = 1,
) -> tuple[NewMessage, Accepted]:
    """Build the exact MIME bytes once and the rows that record the message."""
    msg_id = new_id("msg", now)
    header_id = make_message_id(msg_id.lower().replace("_", "."), message_id_domain)
    mime = build_mime(draft, message_id=header_id, date=datetime.fromtimestamp(now, UTC))
    return record(
        msg_id,
        tenant_id=tenant_id,
        now=now,
        policy=policy,
        sender=draft.sender.email,
        subject=draft.subject,
        header_id=header_id,
        mime=mime,
        smtputf8=draft.smtputf8,
        recipients=[(r.address.email, r.kind) for r in draft.recipients],
        tags=list(draft.tags),
        metadata=dict(draft.metadata),
        send_at=send_at,
        expires_at=expires_at,
        priority=priority,
    )


def record(
    msg_id: str,
    *,
    tenant_id: str,
    now: float,
    policy: RetryPolicy,
    sender: str,
    subject: str,
    header_id: str,
    mime: bytes,
    smtputf8: bool,
    recipients: list[tuple[str, str]],  # (email, kind)
    tags: list[str],
    metadata: dict[str, str],
    send_at: float | None = None,
    expires_at: float | None = None,
    priority: int = 1,
) -> tuple[NewMessage, Accepted]:
    """The rows of one message whose bytes are already built (from a draft or raw MIME)."""
    scheduled = send_at is not None and send_at > now
    status = Status.SCHEDULED if scheduled else Status.QUEUED
    due = send_at if scheduled and send_at is not None else now
    # The queue lifetime starts when the message becomes due, so a send scheduled further
    # out than the lifetime is still tried; expires_at bounds it either way.
    deadline = policy.deadline(due, expires_at)

    message = {
        "id": msg_id,
        "tenant_id": tenant_id,
        "created_at": now,
        "sender": sender,
        "subject": subject,
        "message_id_header": header_id,
        "mime": mime,
        "size": len(mime),
        "smtputf8": smtputf8,
        "tags": list(tags),
        "metadata": dict(metadata),
        "send_at": send_at,
        "expires_at": expires_at,
        "priority": priority,
        "event_seq": 0,
    }
    state = status.value  # an enum's .value is a property call: once, not per recipient
    event_type = f"message.{state}"
    rcpt_rows = []
    event_rows = []
    summary = []
    for seq, (email, kind) in enumerate(recipients, start=1):
        rid = new_id("rcp", now)
        rcpt_rows.append(
            {
                "id": rid,
                "message_id": msg_id,
                "tenant_id": tenant_id,
                "email": email,
                "kind": kind,
                "status": state,
                "priority": priority,
                "attempts": 0,
                "created_at": now,
                "updated_at": now,
                "next_attempt_at": due,
                "deadline": deadline,
                "lease_lost": False,
                "possible_duplicate": False,
                "reason": None,
            }
        )
        event_rows.append(
            {
                "tenant_id": tenant_id,
                "message_id": msg_id,
                "recipient_id": rid,
                "seq": seq,
                "type": event_type,
                "created_at": now,
                "data": {
                    "message_id": msg_id,
                    "recipient_id": rid,
                    "recipient": email,
                    "status": state,
                    "attempt": 0,
                    "tags": list(tags),
                    "metadata": dict(metadata),
                    "seq": seq,
                },
            }
        )
        summary.append((rid, email, state))
    message["event_seq"] = len(rcpt_rows)
    accepted = Accepted(msg_id, state, now, header_id, summary)
    return NewMessage(message, rcpt_rows, event_rows), accepted


def suppress(item: NewMessage, accepted: Accepted, suppressed: set[str]) -> Accepted:
    """End recipients on the tenant's suppression list as ``suppressed``: no SMTP, one event.

    ``suppressed`` holds lower-cased addresses; ``item`` is changed in place.
    """
    hit = {r["id"] for r in item.recipients if r["email"].lower() in suppressed}
    if not hit:
        return accepted
    done = Status.SUPPRESSED.value
    for r in item.recipients:
        if r["id"] in hit:
            r.update(status=done, reason="suppressed")
    for e in item.events:
        if e["recipient_id"] in hit:
            e["type"] = "message.suppressed"
            e["data"].update(status=done, reason="suppressed")
    states = [(i, m, done if i in hit else s) for i, m, s in accepted.recipients]
    return replace(accepted, status=summarise(s for _, _, s in states), recipients=states)


def suppress_later(item: NewMessage, accepted: Accepted, then: Callable[[Accepted], Rows]) -> None:
    """Leave the suppression check to the group commit (``NewMessage.finish``).

    ``then`` gets the final ``Accepted`` inside the writing transaction and returns rows to
    insert with the message. A retried transaction keeps every address found suppressed
    before, so the rows and the answer always agree.
    """
    seen: set[str] = set()

    def finish(hit: set[str]) -> Rows:
        seen.update(hit)
        return then(suppress(item, accepted, seen) if seen else accepted)

    item.finish = finish
