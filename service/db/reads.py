"""Read models for the API: one message with its recipients, attempts and events; lists."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import cast, exists, func, literal, select, text
from sqlalchemy.dialects.postgresql import JSONB

from service.db.engine import Database
from service.db.tables import attempts, events, messages, recipients
from service.domain.status import summarise


@dataclass(frozen=True, slots=True)
class MessageView:
    message: dict[str, Any]
    status: str
    recipients: list[dict[str, Any]]
    attempts: list[dict[str, Any]]
    events: list[dict[str, Any]]


_SUMMARY_COLUMNS = (
    messages.c.id,
    messages.c.tenant_id,
    messages.c.created_at,
    messages.c.sender,
    messages.c.subject,
    messages.c.message_id_header,
    messages.c.size,
    messages.c.tags,
    messages.c.metadata,
    messages.c.send_at,
    messages.c.expires_at,
    messages.c.priority,
)


async def get_message(db: Database, *, tenant_id: str, message_id: str) -> MessageView | None:
    async with db.read() as conn:
        row = (
            await conn.execute(
                select(*_SUMMARY_COLUMNS).where(
                    messages.c.id == message_id, messages.c.tenant_id == tenant_id
                )
            )
        ).first()
        if row is None:
            return None
        rcpts = (
            (
                await conn.execute(
                    select(recipients)
                    .where(recipients.c.message_id == message_id)
                    .order_by(recipients.c.id)
                )
            )
            .mappings()
            .all()
        )
        tries = (
            (
                await conn.execute(
                    select(attempts)
                    .where(attempts.c.message_id == message_id)
                    .order_by(attempts.c.id)
                )
            )
            .mappings()
            .all()
        )
        evs = (
            (
                await conn.execute(
                    select(events).where(events.c.message_id == message_id).order_by(events.c.id)
                )
            )
            .mappings()
            .all()
        )
    rlist = [dict(r) for r in rcpts]
    return MessageView(
        message=dict(row._mapping),
        status=summarise(r["status"] for r in rlist),
        recipients=rlist,
        attempts=[dict(a) for a in tries],
        events=[dict(e) for e in evs],
    )


async def get_raw(db: Database, *, tenant_id: str, message_id: str) -> bytes | None:
    async with db.read() as conn:
        row = (
            await conn.execute(
                select(messages.c.mime).where(
                    messages.c.id == message_id, messages.c.tenant_id == tenant_id
                )
            )
        ).first()
    return None if row is None else row[0]


async def list_messages(
    db: Database,
    *,
    tenant_id: str,
    limit: int,
    before: str | None = None,
    status: str | None = None,
    recipient: str | None = None,
    created_after: float | None = None,
    created_before: float | None = None,
    tag: str | None = None,
    meta: dict[str, str] | None = None,
) -> list[tuple[dict[str, Any], str, list[dict[str, Any]]]]:
    """Newest first; ``before`` is the id of the last item of the previous page."""
    q = select(*_SUMMARY_COLUMNS).where(messages.c.tenant_id == tenant_id)
    if tag:
        q = q.where(_has_tag(db, tag))
    for k, v in (meta or {}).items():
        q = q.where(messages.c.metadata[k].as_string() == v)
    if before:
        q = q.where(messages.c.id < before)
    if created_after is not None:
        q = q.where(messages.c.created_at >= created_after)
    if created_before is not None:
        q = q.where(messages.c.created_at < created_before)
    if recipient or status:
        sub = select(recipients.c.message_id)
        if recipient:
            sub = sub.where(recipients.c.email == recipient)
        if status:
            sub = sub.where(recipients.c.status == status)
        q = q.where(messages.c.id.in_(sub))
    q = q.order_by(messages.c.id.desc()).limit(limit)
    async with db.read() as conn:
        rows = [dict(r._mapping) for r in (await conn.execute(q)).all()]
        ids = [r["id"] for r in rows]
        rc: dict[str, list[dict[str, Any]]] = {i: [] for i in ids}
        if ids:
            rq = select(
                recipients.c.message_id,
                recipients.c.id,
                recipients.c.email,
                recipients.c.status,
            ).where(recipients.c.message_id.in_(ids))
            for r in (await conn.execute(rq)).all():
                rc[r.message_id].append({"id": r.id, "email": r.email, "status": r.status})
    return [(r, summarise(x["status"] for x in rc[r["id"]]), rc[r["id"]]) for r in rows]


def _has_tag(db: Database, tag: str) -> Any:
    """Tags are a JSON array; each database tests membership its own way."""
    if db.is_sqlite:
        return exists(
            select(literal(1))
            .select_from(func.json_each(messages.c.tags).table_valued("value"))
            .where(text("value = :tag").bindparams(tag=tag))
        )
    return cast(messages.c.tags, JSONB).contains([tag])
