"""The suppression list: /v1/suppressions."""

from __future__ import annotations

import time
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query
from starlette.responses import Response

from service.api.deps import Principal, require, runtime
from service.api.errors import ApiError
from service.api.runtime import Runtime
from service.api.schemas import rfc3339
from service.api.sending_schemas import SuppressionIn, SuppressionList, SuppressionOut
from service.db import suppressions as store
from service.domain.addresses import parse_address
from service.domain.errors import FieldError, InvalidRequest

router = APIRouter(prefix="/v1/suppressions", tags=["suppressions"])

_PROBLEM: dict[str, Any] = {"content": {"application/problem+json": {}}}


def _out(row: dict[str, Any]) -> SuppressionOut:
    return SuppressionOut(
        email=row["email"],
        reason=row["reason"],
        detail=row["detail"],
        source_message_id=row["source_message_id"],
        created_at=rfc3339(row["created_at"]),
    )


@router.get(
    "",
    response_model=SuppressionList,
    summary="Suppressed addresses, oldest first",
    description=(
        "Hard bounces (5.1.1, 5.1.2, 5.1.3, 5.1.6, 5.1.10, 5.2.1) are added automatically; "
        "a send to a suppressed address ends `suppressed` with a `message.suppressed` event "
        "and no SMTP."
    ),
)
async def list_suppressions(
    cursor: str | None = Query(default=None, description="next_cursor of the previous page"),
    limit: int = Query(default=50, ge=1, le=500),
    reason: Literal["bounce", "complaint", "manual"] | None = Query(default=None),
    email: str | None = Query(default=None, max_length=320, description="Address contains this"),
    principal: Principal = Depends(require("messages:read")),
    rt: Runtime = Depends(runtime),
) -> SuppressionList:
    if cursor is not None and not cursor.isdigit():
        raise ApiError(400, "bad-cursor", "Invalid cursor", "Use next_cursor from a previous page.")
    rows = await store.list_page(
        rt.db,
        tenant_id=principal.tenant_id,
        limit=limit,
        after=int(cursor) if cursor else None,
        reason=reason,
        email=email,
    )
    return SuppressionList(
        data=[_out(r) for r in rows],
        next_cursor=str(rows[-1]["id"]) if len(rows) == limit else None,
    )


@router.post(
    "",
    status_code=201,
    response_model=SuppressionOut,
    summary="Suppress an address (kept as first added if already there)",
    responses={422: {"description": "Invalid address", **_PROBLEM}},
)
async def add_suppression(
    body: SuppressionIn,
    principal: Principal = Depends(require("messages:send")),
    rt: Runtime = Depends(runtime),
) -> SuppressionOut:
    try:
        address = parse_address(body.email)
    except ValueError as exc:
        raise InvalidRequest([FieldError(("email",), f"invalid address: {exc}")]) from None
    row = await store.add(
        rt.db,
        tenant_id=principal.tenant_id,
        email=address.email,
        reason=body.reason,
        detail=body.detail,
        now=time.time(),
    )
    return _out(row)


@router.delete(
    "/{email}",
    status_code=204,
    summary="Remove an address from the list; sends to it are delivered again",
    responses={404: {"description": "The address is not suppressed", **_PROBLEM}},
)
async def remove_suppression(
    email: str,
    principal: Principal = Depends(require("messages:send")),
    rt: Runtime = Depends(runtime),
) -> Response:
    if not await store.remove(rt.db, tenant_id=principal.tenant_id, email=email):
        raise ApiError(404, "not-found", "Not suppressed", f"{email!r} is not on the list.")
    return Response(status_code=204)
