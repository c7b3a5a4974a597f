"""GET /v1/events: pull the tenant's events since a cursor."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query

from service.api.deps import Principal, require, runtime
from service.api.runtime import Runtime
from service.api.schemas import rfc3339
from service.api.sending_schemas import EventFeedItem, EventList
from service.db.event_feed import events_after

router = APIRouter(prefix="/v1/events", tags=["events"])


@router.get(
    "",
    response_model=EventList,
    summary="Events after a cursor, oldest first (for consumers that pull)",
    description=(
        "Start with `after=0` (or the id of the last event you processed) and pass "
        "`next_cursor` back each time. `type` filters by event type (repeatable)."
    ),
)
async def list_events(
    after: int = Query(default=0, ge=0, description="Return events with a larger id"),
    limit: int = Query(default=100, ge=1, le=1000),
    type: list[str] | None = Query(default=None, description="e.g. message.bounced"),
    message_id: str | None = Query(default=None, max_length=40),
    principal: Principal = Depends(require("messages:read")),
    rt: Runtime = Depends(runtime),
) -> EventList:
    rows = await events_after(
        rt.db,
        tenant_id=principal.tenant_id,
        after=after,
        limit=limit,
        types=type,
        message_id=message_id,
    )
    return EventList(
        data=[
            EventFeedItem(
                id=e["id"],
                type=e["type"],
                seq=e["seq"],
                created_at=rfc3339(e["created_at"]),
                recipient_id=e["recipient_id"],
                message_id=e["message_id"],
                data=e["data"],
            )
            for e in rows
        ],
        next_cursor=str(rows[-1]["id"] if rows else after),
    )
