"""Endpoint records and delivery history: every query is scoped to one tenant."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, select, update

from service.db.engine import Database
from service.db.tables import events, webhook_attempts, webhook_deliveries, webhook_endpoints
from service.domain.ids import new_id
from service.webhooks.delivery_queue import cancel_pending
from service.webhooks.events import DEFAULT_TYPES, envelope
from service.webhooks.outbox import delivery_row, mark_pending
from service.webhooks.secrets import first_secret, rotate

_E = webhook_endpoints
_D = webhook_deliveries
_A = webhook_attempts
REPLAY_PAGE = 2000

_PUBLIC = (
    _E.c.id,
    _E.c.url,
    _E.c.description,
    _E.c.events,
    _E.c.enabled,
    _E.c.disabled_reason,
    _E.c.created_at,
    _E.c.updated_at,
    _E.c.failing_since,
)


def _mine(tenant_id: str, endpoint_id: str) -> Any:
    return (_E.c.tenant_id == tenant_id) & (_E.c.id == endpoint_id)


async def create(
    db: Database, *, tenant_id: str, url: str, types: Sequence[str], description: str, now: float
) -> tuple[dict[str, Any], str]:
    """A new enabled endpoint and its first secret (returned once, stored for signing)."""
    secret, secrets = first_secret()
    row = {
        "id": new_id("whk", now),
        "tenant_id": tenant_id,
        "url": url,
        "description": description,
        "events": list(types),
        "secrets": secrets,
        "enabled": True,
        "disabled_reason": None,
        "created_at": now,
        "updated_at": now,
        "failing_since": None,
    }
    async with db.write() as conn:
        await conn.execute(_E.insert(), [row])
    return {k: row[k] for k in (c.name for c in _PUBLIC)}, secret


async def list_all(db: Database, *, tenant_id: str) -> list[dict[str, Any]]:
    async with db.read() as conn:
        rows = await conn.execute(
            select(*_PUBLIC).where(_E.c.tenant_id == tenant_id).order_by(_E.c.id)
        )
        return [dict(r._mapping) for r in rows]


async def get(db: Database, *, tenant_id: str, endpoint_id: str) -> dict[str, Any] | None:
    async with db.read() as conn:
        row = (await conn.execute(select(*_PUBLIC).where(_mine(tenant_id, endpoint_id)))).first()
    return None if row is None else dict(row._mapping)


async def update_endpoint(
    db: Database, *, tenant_id: str, endpoint_id: str, changes: dict[str, Any], now: float
) -> dict[str, Any] | None:
    """Apply ``changes`` (url, events, description, enabled); None if not this tenant's."""
    values = dict(changes)
    if values.get("enabled") is True:
        values.update(disabled_reason=None, failing_since=None)
    elif values.get("enabled") is False:
        values["disabled_reason"] = "disabled by the owner"
    async with db.write() as conn:
        found = await conn.execute(
            update(_E).where(_mine(tenant_id, endpoint_id)).values(**values, updated_at=now)
        )
        if not found.rowcount:
            return None
        if values.get("enabled") is False:
            await cancel_pending(conn, endpoint_id, "endpoint disabled by the owner", now)
        row = (await conn.execute(select(*_PUBLIC).where(_mine(tenant_id, endpoint_id)))).first()
    return None if row is None else dict(row._mapping)


async def remove(db: Database, *, tenant_id: str, endpoint_id: str) -> bool:
    """Delete an endpoint with its delivery history."""
    async with db.write() as conn:
        gone = await conn.execute(delete(_E).where(_mine(tenant_id, endpoint_id)))
        if not gone.rowcount:
            return False
        ids = select(_D.c.id).where(_D.c.endpoint_id == endpoint_id).scalar_subquery()
        await conn.execute(delete(_A).where(_A.c.delivery_id.in_(ids)))
        await conn.execute(delete(_D).where(_D.c.endpoint_id == endpoint_id))
    return True


async def rotate_secret(
    db: Database, *, tenant_id: str, endpoint_id: str, now: float, grace: float
) -> tuple[str, float | None] | None:
    """A new secret; the old ones keep signing until ``now + grace``."""
    async with db.write() as conn:
        q = select(_E.c.secrets).where(_mine(tenant_id, endpoint_id))
        if not db.is_sqlite:
            q = q.with_for_update()
        row = (await conn.execute(q)).first()
        if row is None:
            return None
        secret, entries = rotate(list(row[0] or []), now, grace)
        await conn.execute(
            update(_E).where(_E.c.id == endpoint_id).values(secrets=entries, updated_at=now)
        )
    old_until = max((e["expires_at"] for e in entries if e["expires_at"]), default=None)
    return secret, old_until


async def send_test(
    db: Database, *, endpoint_id: str, tenant_id: str, now: float
) -> dict[str, Any]:
    """Queue a ``webhook.test`` delivery for the dispatcher."""
    payload = envelope(
        "webhook.test", now, {"endpoint_id": endpoint_id, "message": "Kirim test event"}
    )
    row = delivery_row(endpoint_id, tenant_id, None, "webhook.test", now, payload=payload)
    async with db.write() as conn:
        await conn.execute(_D.insert(), [row])
        mark_pending(conn)
    return row


async def replay(
    db: Database,
    *,
    tenant_id: str,
    endpoint_id: str,
    types: Sequence[str],
    since: float | None,
    since_event_id: int | None,
    now: float,
) -> int:
    """New deliveries for every matching event from ``since`` (or that event id) on.

    The ``webhook-id`` is the event's usual one, so receivers that already processed an
    event recognise it. Pages commit separately: a large replay never holds the writer.
    """
    wanted = sorted(types) if types else sorted(DEFAULT_TYPES)
    after_id = (since_event_id - 1) if since_event_id is not None else -1
    total = 0
    while True:
        q = (
            select(events.c.id, events.c.type)
            .where(
                events.c.tenant_id == tenant_id,
                events.c.type.in_(wanted),
                events.c.id > after_id,
            )
            .order_by(events.c.id)
            .limit(REPLAY_PAGE)
        )
        if since is not None:
            q = q.where(events.c.created_at >= since)
        async with db.write() as conn:
            page = (await conn.execute(q)).all()
            if not page:
                return total
            await conn.execute(
                _D.insert(),
                [delivery_row(endpoint_id, tenant_id, eid, etype, now) for eid, etype in page],
            )
            mark_pending(conn)
        total += len(page)
        after_id = page[-1][0]


async def deliveries(
    db: Database, *, endpoint_id: str, limit: int, before: str | None
) -> list[dict[str, Any]]:
    """Newest deliveries first, each with its attempts in order."""
    q = select(_D).where(_D.c.endpoint_id == endpoint_id).order_by(_D.c.id.desc()).limit(limit)
    if before is not None:
        q = q.where(_D.c.id < before)
    async with db.read() as conn:
        rows = [dict(r._mapping) for r in await conn.execute(q)]
        ids = [r["id"] for r in rows]
        tries: dict[str, list[dict[str, Any]]] = {i: [] for i in ids}
        if ids:
            found = await conn.execute(
                select(_A).where(_A.c.delivery_id.in_(ids)).order_by(_A.c.delivery_id, _A.c.number)
            )
            for a in found:
                tries[a.delivery_id].append(dict(a._mapping))
    for r in rows:
        r["attempt_log"] = tries[r["id"]]
    return rows
