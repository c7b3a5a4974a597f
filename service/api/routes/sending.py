"""Cancel, preview and raw MIME sends."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Header, Request
from starlette.responses import Response

from service import idempotency, sending
from service.api.deps import Guards, Principal, guards, require, runtime
from service.api.errors import ApiError
from service.api.replay import commit_or_replay, replayed
from service.api.runtime import Runtime
from service.api.schemas import PRIORITY_VALUE, RecipientState, SendAccepted, SendRequest, rfc3339
from service.api.sending_schemas import CancelResult, RawSendRequest
from service.db.accepts import NewMessage
from service.db.cancel import cancel_message
from service.db.reads import get_message
from service.domain import envelope, raw
from service.domain.errors import FieldError, InvalidRequest
from service.domain.ids import is_id, new_id
from service.domain.mime import build_mime, make_message_id
from service.submission import Accepted, record

router = APIRouter(prefix="/v1/messages", tags=["messages"])

_PROBLEM: dict[str, Any] = {"content": {"application/problem+json": {}}}
_RFC822: dict[int | str, dict[str, Any]] = {200: {"content": {"message/rfc822": {}}}}


def _not_found(message_id: str) -> ApiError:
    return ApiError(404, "not-found", "No such message", f"No message {message_id!r}.")


@router.post(
    "/{message_id}/cancel",
    response_model=CancelResult,
    summary="Cancel every recipient not yet sent",
    description=(
        "Recipients that are scheduled, queued or deferred end `cancelled`, each with a "
        "`message.cancelled` event, in one transaction. A recipient being sent at this moment "
        "(`sending`: a worker holds it inside an SMTP transaction) cannot be recalled: if "
        "nothing else could be cancelled the answer is 409, and the recipient ends as SMTP "
        "decides. Cancelling again is harmless (200, nothing cancelled)."
    ),
    responses={
        404: {"description": "No such message", **_PROBLEM},
        409: {"description": "Only recipients being sent right now are left", **_PROBLEM},
    },
)
async def cancel(
    message_id: str,
    principal: Principal = Depends(require("messages:send")),
    rt: Runtime = Depends(runtime),
) -> CancelResult:
    if not is_id(message_id, "msg"):
        raise _not_found(message_id)
    done = await cancel_message(
        rt.db, tenant_id=principal.tenant_id, message_id=message_id, now=time.time()
    )
    if done is None:
        raise _not_found(message_id)
    if not done.cancelled and done.in_flight:
        raise ApiError(
            409,
            "in-flight",
            "Being sent now",
            "The remaining recipients are inside an SMTP transaction and cannot be recalled.",
        )
    view = await get_message(rt.db, tenant_id=principal.tenant_id, message_id=message_id)
    return CancelResult(
        id=message_id,
        status=view.status if view else "cancelled",
        cancelled=[RecipientState(id=i, email=e, status="cancelled") for i, e in done.cancelled],
        in_flight=[RecipientState(id=i, email=e, status="sending") for i, e in done.in_flight],
        unchanged=[RecipientState(id=i, email=e, status=s) for i, e, s in done.unchanged],
    )


@router.post(
    "/preview",
    response_class=Response,
    summary="The MIME bytes a send request would produce; nothing is stored",
    description=(
        "Checks the request exactly as `POST /v1/messages` does (templates rendered, every "
        "field error a 422) and returns the message as it would be sent. Message-ID, Date "
        "and multipart boundaries are made afresh when the message is really accepted; "
        "every other byte is the same."
    ),
    responses={**_RFC822, 422: {"description": "A field is invalid", **_PROBLEM}},
)
async def preview(
    body: SendRequest,
    principal: Principal = Depends(require("messages:send")),
    rt: Runtime = Depends(runtime),
) -> Response:
    now = time.time()
    ctx = await sending.load_context(rt, principal.tenant_id, [body], now)
    planned = sending.plan(body, ctx)
    local = new_id("msg", now).lower().replace("_", ".")
    mime = build_mime(
        planned.draft,
        message_id=make_message_id(local, rt.settings.message_id_domain),
        date=datetime.fromtimestamp(now, UTC),
    )
    return Response(mime, media_type="message/rfc822")


@router.post(
    "/raw",
    status_code=202,
    response_model=SendAccepted,
    summary="Accept a message you built yourself (RFC 5322, base64)",
    description=(
        "`from` and `to` are the SMTP envelope; the message is sent as given, except that "
        "line endings become CRLF and a missing Message-ID or Date header is added at the "
        "top (RFC 5322 wants both; status and bounce matching use the Message-ID). Refused "
        "with 422: invalid base64, NUL bytes, a bare CR, lines over 998 octets, no From "
        "header, a malformed header section. Bcc headers are not removed: leave them out. "
        "An `Idempotency-Key` works as on `POST /v1/messages`."
    ),
    responses={
        409: {"description": "The first request with this Idempotency-Key is running", **_PROBLEM},
        422: {"description": "A field is invalid", **_PROBLEM},
    },
)
async def send_raw(
    body: RawSendRequest,
    request: Request,
    idempotency_key: str | None = Header(
        default=None, alias=idempotency.HEADER, description="Makes retries safe."
    ),
    principal: Principal = Depends(require("messages:send")),
    rt: Runtime = Depends(runtime),
    guard: Guards = Depends(guards),
) -> Response:
    # ``idempotency_key`` documents the header; every value is read to refuse duplicates.
    key = idempotency.parse_key(request.headers.getlist(idempotency.HEADER))
    fp = ""
    if key is not None:
        canonical = body.model_dump(mode="json", by_alias=True)
        fp = idempotency.fingerprint("POST", request.url.path, canonical)
    async with guard.idempotency.claim(principal.tenant_id, key, fp) as claim:
        if claim.replay is not None:
            return replayed(claim.replay)
        rows, accepted = await _raw_rows(rt, body, principal.tenant_id, claim.now)
        content = SendAccepted(
            id=accepted.id,
            status=accepted.status,
            message_id=accepted.message_id_header,
            created_at=rfc3339(accepted.created_at) or "",
            recipients=[RecipientState(id=i, email=e, status=s) for i, e, s in accepted.recipients],
        ).model_dump_json()
        rows.extra.extend(claim.row(202, content))
        if (lost := await commit_or_replay(rt, claim, rows)) is not None:
            return lost  # another process stored this key first: its answer
    return Response(content, status_code=202, media_type="application/json")


async def _raw_rows(
    rt: Runtime, body: RawSendRequest, tenant_id: str, now: float
) -> tuple[NewMessage, Accepted]:
    """The rows of a valid raw send (suppressions applied); InvalidRequest otherwise."""
    send_at = body.send_at.timestamp() if body.send_at else None
    expires_at = body.expires_at.timestamp() if body.expires_at else None
    errors = sending.schedule_errors(send_at, expires_at, now)
    try:
        # The envelope addresses, tags and metadata get the same checks as any send.
        checked: envelope.Draft | None = envelope.compose(
            sender=body.from_,
            to=body.to,
            subject="-",
            text="-",
            tags=body.tags,
            metadata=body.metadata,
            limits=rt.limits,
        )
    except InvalidRequest as exc:
        errors.extend(exc.errors)
        checked = None
    msg_id = new_id("msg", now)
    local = msg_id.lower().replace("_", ".")
    message: raw.RawMessage | None = None
    try:
        message = raw.normalise(
            raw.decode(body.raw),
            message_id=make_message_id(local, rt.settings.message_id_domain),
            date=datetime.fromtimestamp(now, UTC),
            max_bytes=rt.settings.max_body_bytes,
        )
    except InvalidRequest as exc:
        errors.extend(exc.errors)
    if errors or checked is None or message is None:
        raise InvalidRequest(errors or [FieldError(("to",), "invalid")])
    rows, accepted = record(
        msg_id,
        tenant_id=tenant_id,
        now=now,
        policy=rt.policy,
        sender=checked.sender.email,
        subject=message.subject,
        header_id=message.message_id,
        mime=message.mime,
        smtputf8=checked.smtputf8 or message.eight_bit_headers,
        recipients=[(r.address.email, "to") for r in checked.recipients],
        tags=list(checked.tags),
        metadata=dict(checked.metadata),
        send_at=send_at,
        expires_at=expires_at,
        priority=PRIORITY_VALUE[body.priority],
    )
    ((rows, accepted),) = await sending.apply_suppressions(rt, tenant_id, [(rows, accepted)])
    return rows, accepted
