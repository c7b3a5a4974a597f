"""Events of one tenant in id order, for clients that pull instead of taking webhooks."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from service.db.engine import Database
from service.db.tables import events


async def events_after(
    db: Database,
    *,
    tenant_id: str,
    after: int,
    limit: int,
    types: list[str] | None = None,
    message_id: str | None = None,
) -> list[dict[str, Any]]:
    """Up to ``limit`` events with id above ``after``, oldest first."""
    q = select(events).where(events.c.tenant_id == tenant_id, events.c.id > after)
    if types:
        q = q.where(events.c.type.in_(types))
    if message_id:
        q = q.where(events.c.message_id == message_id)
    q = q.order_by(events.c.id).limit(limit)
    async with db.read() as conn:
        return [dict(r._mapping) for r in (await conn.execute(q)).all()]
