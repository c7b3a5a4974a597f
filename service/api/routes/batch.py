"""POST /v1/messages/batch: many messages in one request and one transaction."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Depends, Header, Request
from pydantic import ValidationError
from sqlalchemy.exc import IntegrityError
from starlette.responses import Response

from service import idempotency, sending
from service.api.deps import Guards, Principal, guards, require, runtime
from service.api.replay import replayed
from service.api.runtime import Runtime
from service.api.schemas import SendRequest
from service.api.sending_schemas import BatchRequest, BatchResult
from service.db.accepts import NewMessage, insert_messages
from service.domain.errors import FieldError, InvalidRequest
from service.observability import record
from service.submission import Accepted

router = APIRouter(prefix="/v1/messages", tags=["messages"])

_PROBLEM: dict[str, Any] = {"content": {"application/problem+json": {}}}


def committed(rt: Runtime) -> None:
    """Wake the workers as the group committer does after its own commits."""
    hook = getattr(rt.committer, "_on_commit", None)
    if hook is not None:
        hook()


def _schema_errors(exc: ValidationError, loc: tuple[str | int, ...]) -> list[FieldError]:
    return [
        FieldError((*loc, *(p if isinstance(p, int) else str(p) for p in e["loc"])), e["msg"])
        for e in exc.errors()
    ]


@router.post(
    "/batch",
    status_code=202,
    response_model=BatchResult,
    summary="Accept up to KIRIM_BATCH_MAX messages in one request",
    description=(
        "Each item is a send request, checked exactly as `POST /v1/messages` checks it. All "
        "valid items are stored in one transaction; `data` holds one result per item, in "
        "order: the message id, or the item's field errors (paths start at "
        "`messages.<index>`). Invalid items do not block valid ones, unless `atomic` is true: "
        "then any invalid item rejects the whole batch with 422 and nothing is stored. A "
        "batch in which no item is valid is a 422 too. Idempotency-Key works as on "
        "`POST /v1/messages`."
    ),
    responses={
        409: {"description": "The first request with this Idempotency-Key is running", **_PROBLEM},
        422: {"description": "Too many items, atomic batch with an invalid item", **_PROBLEM},
    },
)
async def send_batch(
    body: BatchRequest,
    request: Request,
    idempotency_key: str | None = Header(
        default=None, alias=idempotency.HEADER, description="Makes retries safe."
    ),
    principal: Principal = Depends(require("messages:send")),
    rt: Runtime = Depends(runtime),
    guard: Guards = Depends(guards),
) -> Response:
    limit = rt.settings.batch_max
    if len(body.messages) > limit:
        raise InvalidRequest(
            [FieldError(("messages",), f"at most {limit} messages per batch (KIRIM_BATCH_MAX)")]
        )
    key = idempotency.parse_key(request.headers.getlist(idempotency.HEADER))
    fp = ""
    if key is not None:
        fp = idempotency.fingerprint("POST", request.url.path, body.model_dump(mode="json"))
    tenant = principal.tenant_id
    async with guard.idempotency.claim(tenant, key, fp) as claim:
        if claim.replay is not None:
            return replayed(claim.replay)
        errors: dict[int, list[FieldError]] = {}
        parsed: dict[int, SendRequest] = {}
        for i, raw in enumerate(body.messages):
            try:
                parsed[i] = SendRequest.model_validate(raw)
            except ValidationError as exc:
                errors[i] = _schema_errors(exc, ("messages", i))
        ctx = await sending.load_context(rt, tenant, list(parsed.values()), claim.now)
        built: dict[int, tuple[NewMessage, Accepted]] = {}
        for i, item in parsed.items():
            try:
                built[i] = sending.rows_for(rt, sending.plan(item, ctx, ("messages", i)), ctx)
            except InvalidRequest as exc:
                errors[i] = exc.errors
        if errors and (body.atomic or not built):
            raise InvalidRequest([e for i in sorted(errors) for e in errors[i]])
        order = sorted(built)
        done = await sending.apply_suppressions(rt, tenant, [built[i] for i in order])
        accepted = dict(zip(order, (acc for _, acc in done), strict=True))
        content = result_json(
            len(accepted),
            len(errors),
            [_result(i, accepted.get(i), errors.get(i)) for i in range(len(body.messages))],
        )
        items = [item for item, _ in done]
        items[0].extra.extend(claim.row(202, content))
        try:
            await insert_messages(rt.db, items)
        except IntegrityError:
            replay = await claim.resolve_conflict()
            if replay is None:
                raise
            return replayed(replay)
    committed(rt)
    record.accepted_many(items)  # counted and logged as every other accept
    return Response(content, status_code=202, media_type="application/json")


def result_json(accepted: int, rejected: int, data: list[dict[str, Any]]) -> str:
    """``BatchResult(...).model_dump_json(exclude_none=True)``, written from plain dicts:
    building and dumping 500 models cost several times the dump of their dicts."""
    return orjson.dumps({"accepted": accepted, "rejected": rejected, "data": data}).decode()


def _result(index: int, acc: Accepted | None, errors: list[FieldError] | None) -> dict[str, Any]:
    """One item of ``BatchResult.data`` (a ``BatchItem`` without its absent fields)."""
    if acc is None:
        return {
            "index": index,
            "errors": [
                {"field": e.field, "loc": list(e.loc), "message": e.msg} for e in errors or []
            ],
        }
    return {
        "index": index,
        "id": acc.id,
        "status": acc.status,
        "message_id": acc.message_id_header,
        "recipients": [{"id": i, "email": e, "status": st} for i, e, st in acc.recipients],
    }
