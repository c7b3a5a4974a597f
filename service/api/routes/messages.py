"""Sending messages and reading their status."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Depends, Header, Query, Request
from pydantic import AwareDatetime
from starlette.responses import Response

from service import idempotency, sending, submission
from service.api.deps import Guards, Principal, guards, require, runtime
from service.api.errors import ApiError
from service.api.replay import commit_or_replay, replayed
from service.api.runtime import Runtime
from service.api.schemas import (
    PRIORITY_NAME,
    AttemptOut,
    EventOut,
    MessageList,
    MessageOut,
    MessageSummary,
    RecipientOut,
    RecipientState,
    SendAccepted,
    SendRequest,
    rfc3339,
)
from service.api.search import metadata_filters
from service.db import reads
from service.db.accepts import Rows
from service.domain import envelope
from service.domain.ids import is_id
from service.submission import Accepted

router = APIRouter(prefix="/v1/messages", tags=["messages"])

_PROBLEM: dict[str, Any] = {"content": {"application/problem+json": {}}}
_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "Malformed JSON", **_PROBLEM},
    401: {"description": "Missing or invalid API key", **_PROBLEM},
    403: {"description": "The key lacks the needed scope", **_PROBLEM},
    413: {"description": "Body too large", **_PROBLEM},
    422: {"description": "A field is invalid; `errors` names each one", **_PROBLEM},
    503: {"description": "Database unavailable; nothing stored; retry", **_PROBLEM},
}


def draft_from(body: SendRequest, limits: envelope.Limits) -> envelope.Draft:
    reply_to = [body.reply_to] if isinstance(body.reply_to, str) else body.reply_to
    return envelope.compose(
        sender=body.from_,
        to=body.to,
        cc=body.cc,
        bcc=body.bcc,
        reply_to=reply_to,
        subject=body.subject or "",
        text=body.text,
        html=body.html,
        headers=body.headers,
        attachments=[
            envelope.AttachmentIn(a.filename, a.content, a.content_type, a.content_id)
            for a in body.attachments
        ],
        tags=body.tags,
        metadata=body.metadata,
        limits=limits,
    )


@router.post(
    "",
    status_code=202,
    response_model=SendAccepted,
    summary="Accept a message for delivery",
    description=(
        "Validates the message, builds its exact MIME bytes and stores it durably. The 202 "
        "is sent only after the commit reached disk; delivery happens in the background.\n\n"
        "With an `Idempotency-Key` header (1-255 printable ASCII characters, a UUID is ideal) "
        "a retry with the same key and body replays the first response (same id, header "
        "`Idempotent-Replayed: true`) and sends nothing again, for at least 24 hours "
        "(`KIRIM_IDEMPOTENCY_TTL`). The same key with another body is refused with 422; "
        "while the first request is still running, 409 with `Retry-After`. A request that "
        "fails validation stores no key."
    ),
    responses={
        **_ERRORS,
        409: {"description": "The first request with this Idempotency-Key is running", **_PROBLEM},
        429: {"description": "Rate limit; see Retry-After; nothing stored", **_PROBLEM},
    },
)
async def send_message(
    body: SendRequest,
    request: Request,
    idempotency_key: str | None = Header(
        default=None,
        alias=idempotency.HEADER,
        description="Makes retries safe: same key and body, same response, one message.",
    ),
    principal: Principal = Depends(require("messages:send")),
    guard: Guards = Depends(guards),
) -> Response:
    # Most requests never get here: ``service.api.fast_send`` answers valid JSON bodies with
    # the same ``accept_send`` and passes everything else on to this route.
    # ``idempotency_key`` documents the header; every value is read to refuse duplicates.
    return await accept_send(
        guard, principal, body, request.headers.getlist(idempotency.HEADER), request.url.path
    )


async def accept_send(
    guard: Guards,
    principal: Principal,
    body: SendRequest,
    idempotency_keys: list[str],
    path: str,
) -> Response:
    """Accept one authenticated, schema-valid send request: 202 once durably committed."""
    rt = guard.runtime
    key = idempotency.parse_key(idempotency_keys)
    fp = ""
    if key is not None:
        canonical = body.model_dump(mode="json", by_alias=True)
        fp = idempotency.fingerprint("POST", path, canonical)
    async with guard.idempotency.claim(principal.tenant_id, key, fp) as claim:
        if claim.replay is not None:
            return replayed(claim.replay)
        rows, accepted = await sending.accept_one(
            rt, body, tenant_id=principal.tenant_id, now=claim.now
        )
        answer: list[str] = []

        def respond(final: Accepted) -> Rows:
            # Inside the commit, once suppressions are applied: the answer is stored with
            # the Idempotency-Key in the same transaction.
            answer[:] = [_accepted_json(final)]
            return claim.row(202, answer[0])

        submission.suppress_later(rows, accepted, respond)
        if (lost := await commit_or_replay(rt, claim, rows)) is not None:
            return lost  # another process stored this key first: its answer
    return Response(answer[0], status_code=202, media_type="application/json")


def _accepted_json(accepted: Accepted) -> str:
    """The 202 body (``SendAccepted``), built as plain JSON: no model on the hot path."""
    return orjson.dumps(
        {
            "id": accepted.id,
            "status": accepted.status,
            "message_id": accepted.message_id_header,
            "created_at": rfc3339(accepted.created_at) or "",
            "recipients": [{"id": i, "email": e, "status": s} for i, e, s in accepted.recipients],
        }
    ).decode()


@router.get(
    "/{message_id}",
    response_model=MessageOut,
    response_model_by_alias=True,
    summary="A message's status, every recipient, every attempt and event",
    responses={404: {"description": "No such message", **_PROBLEM}},
)
async def get_message(
    message_id: str,
    principal: Principal = Depends(require("messages:read")),
    rt: Runtime = Depends(runtime),
) -> MessageOut:
    view = None
    if is_id(message_id, "msg"):
        view = await reads.get_message(rt.db, tenant_id=principal.tenant_id, message_id=message_id)
    if view is None:
        raise ApiError(404, "not-found", "No such message", f"No message {message_id!r}.")
    m = view.message
    return MessageOut(
        id=m["id"],
        status=view.status,
        created_at=rfc3339(m["created_at"]),
        from_=m["sender"],
        subject=m["subject"],
        message_id=m["message_id_header"],
        size=m["size"],
        tags=m["tags"] or [],
        metadata=m["metadata"] or {},
        priority=PRIORITY_NAME.get(m["priority"], "normal"),
        send_at=rfc3339(m["send_at"]),
        expires_at=rfc3339(m["expires_at"]),
        recipients=[_recipient(r) for r in view.recipients],
        attempts=[
            AttemptOut(
                recipient_id=a["recipient_id"],
                number=a["number"],
                started_at=rfc3339(a["started_at"]),
                duration_ms=round(a["duration"] * 1000, 3),
                outcome=a["outcome"],
                stage=a["stage"],
                code=a["code"],
                enhanced_code=a["enhanced"],
                reply=a["reply"],
                possible_duplicate=a["possible_duplicate"],
            )
            for a in view.attempts
        ],
        events=[
            EventOut(
                id=e["id"],
                type=e["type"],
                seq=e["seq"],
                created_at=rfc3339(e["created_at"]),
                recipient_id=e["recipient_id"],
                data=e["data"],
            )
            for e in view.events
        ],
    )


def _recipient(r: dict[str, Any]) -> RecipientOut:
    last = None
    if r["last_stage"] is not None:
        last = {
            "code": r["last_code"],
            "enhanced_code": r["last_enhanced"],
            "text": r["last_reply"],
            "stage": r["last_stage"],
        }
    waiting = r["status"] in ("scheduled", "queued", "deferred")
    return RecipientOut(
        id=r["id"],
        email=r["email"],
        kind=r["kind"],
        status=r["status"],
        reason=r["reason"],
        attempts=r["attempts"],
        next_attempt_at=rfc3339(r["next_attempt_at"]) if waiting else None,
        sent_at=rfc3339(r["sent_at"]),
        possible_duplicate=r["possible_duplicate"],
        bounce_category=r.get("bounce_category"),
        last_reply=last,
    )


@router.get(
    "/{message_id}/raw",
    summary="The exact MIME bytes that are sent",
    response_class=Response,
    responses={200: {"content": {"message/rfc822": {}}}, 404: {"description": "No such message"}},
)
async def get_raw(
    message_id: str,
    principal: Principal = Depends(require("messages:read")),
    rt: Runtime = Depends(runtime),
) -> Response:
    raw = None
    if is_id(message_id, "msg"):
        raw = await reads.get_raw(rt.db, tenant_id=principal.tenant_id, message_id=message_id)
    if raw is None:
        raise ApiError(404, "not-found", "No such message", f"No message {message_id!r}.")
    return Response(raw, media_type="message/rfc822")


@router.get(
    "",
    response_model=MessageList,
    response_model_by_alias=True,
    summary="Messages, newest first, with cursor pagination and filters",
    description=(
        "Filters combine with AND: `status`, `recipient`, `tag`, `created_after`, "
        "`created_before`, and metadata as `metadata[key]=value` or `meta.key=value`."
    ),
)
async def list_messages(
    request: Request,
    cursor: str | None = Query(default=None, description="next_cursor of the previous page"),
    limit: int = Query(default=50, ge=1, le=200),
    status: str | None = Query(default=None, description="Messages with a recipient in this state"),
    recipient: str | None = Query(default=None, description="Messages sent to this address"),
    tag: str | None = Query(default=None, description="Messages carrying this tag"),
    created_after: AwareDatetime | None = Query(default=None, description="RFC 3339, inclusive"),
    created_before: AwareDatetime | None = Query(default=None, description="RFC 3339, exclusive"),
    principal: Principal = Depends(require("messages:read")),
    rt: Runtime = Depends(runtime),
) -> MessageList:
    """Metadata filters: ``metadata[key]=value`` or ``meta.key=value`` (repeatable keys AND)."""
    if cursor is not None and not is_id(cursor, "msg"):
        raise ApiError(400, "bad-cursor", "Invalid cursor", "Use next_cursor from a previous page.")
    rows = await reads.list_messages(
        rt.db,
        tenant_id=principal.tenant_id,
        limit=limit,
        before=cursor,
        status=status,
        recipient=recipient.lower() if recipient else None,
        created_after=created_after.timestamp() if created_after else None,
        created_before=created_before.timestamp() if created_before else None,
        tag=tag,
        meta=metadata_filters(request.query_params.multi_items()),
    )
    data = [
        MessageSummary(
            id=m["id"],
            status=st,
            created_at=rfc3339(m["created_at"]),
            from_=m["sender"],
            subject=m["subject"],
            tags=m["tags"] or [],
            recipients=[RecipientState(**r) for r in rc],
        )
        for m, st, rc in rows
    ]
    next_cursor = data[-1].id if len(data) == limit else None
    return MessageList(data=data, next_cursor=next_cursor)
