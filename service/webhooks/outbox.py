"""Outbox fan-out: one delivery row per event and subscribed endpoint.

Runs inside the transaction that writes the events (accept or settle), so a committed
state change always has its deliveries: a crash can lose neither. It costs one SELECT
and, when something matches, one executemany INSERT per transaction (``record_events``
adds the events' own INSERT, and a SELECT of their ids when a delivery needs them).
The commit then wakes a dispatcher in this process (see ``mark_pending``); others poll.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import bindparam, select

from service.db.plain_insert import insert_rows
from service.db.plain_statement import PlainStatement
from service.db.reserved_ids import reserve_ids
from service.db.tables import events, webhook_deliveries, webhook_endpoints
from service.domain.ids import new_id
from service.webhooks.events import wants, webhook_id

# Key in the DBAPI connection's info dict: "this transaction created deliveries".
PENDING_FLAG = "kirim.webhooks.pending"


async def record_events(conn: Any, event_rows: Sequence[dict[str, Any]]) -> int:
    """Insert ``event_rows`` (events rows without ids) and their deliveries.

    Ids are only needed when a delivery names its event, so they are reserved only then,
    and the events go in with one plain executemany either way. Returns how many delivery
    rows were written.
    """
    if not event_rows:
        return 0
    subscribed = await subscriptions(conn, {e["tenant_id"] for e in event_rows})
    if not wanted_by_any(subscribed, event_rows):
        await insert_rows(conn, events, event_rows)
        return 0
    ids = await reserve_ids(conn, events, len(event_rows))
    if ids is None:
        inserted = await conn.execute(
            events.insert().returning(events.c.id, sort_by_parameter_order=True), event_rows
        )
        ids = list(inserted.scalars().all())
        with_ids = [{**e, "id": i} for e, i in zip(event_rows, ids, strict=True)]
    else:
        with_ids = [{**e, "id": i} for e, i in zip(event_rows, ids, strict=True)]
        await insert_rows(conn, events, with_ids)
    return await deliver(conn, subscribed, with_ids)


Subscriptions = dict[str, list[tuple[str, list[str]]]]  # tenant -> [(endpoint id, types)]

# Plain: it runs in every accept and settle transaction.
_ENABLED_ENDPOINTS = PlainStatement(
    select(webhook_endpoints.c.id, webhook_endpoints.c.tenant_id, webhook_endpoints.c.events).where(
        webhook_endpoints.c.tenant_id.in_(bindparam("tenants", expanding=True)),
        webhook_endpoints.c.enabled,
    )
)


async def subscriptions(conn: Any, tenants: Iterable[str]) -> Subscriptions:
    """The enabled endpoints of ``tenants`` and the event types each wants (one SELECT)."""
    wanted = sorted(set(tenants))
    if not wanted:
        return {}
    found = await _ENABLED_ENDPOINTS.rows(conn, {"tenants": wanted})
    by_tenant: Subscriptions = {}
    for endpoint_id, tenant_id, types in found:
        by_tenant.setdefault(tenant_id, []).append((endpoint_id, list(types or [])))
    return by_tenant


def wanted_by_any(subscribed: Subscriptions, event_rows: Iterable[dict[str, Any]]) -> bool:
    """Whether any of the events (dicts with ``tenant_id``, ``type``) gets a delivery."""
    return any(
        wants(types, e["type"])
        for e in event_rows
        for _, types in subscribed.get(e["tenant_id"], ())
    )


async def deliver(
    conn: Any, subscribed: Subscriptions, event_rows_with_ids: Sequence[dict[str, Any]]
) -> int:
    """Insert the deliveries of events with ids for the ``subscriptions`` found."""
    if not subscribed:
        return 0
    now = time.time()
    rows = [
        delivery_row(endpoint_id, e["tenant_id"], e["id"], e["type"], now)
        for e in event_rows_with_ids
        for endpoint_id, types in subscribed.get(e["tenant_id"], ())
        if wants(types, e["type"])
    ]
    if rows:
        await insert_rows(conn, webhook_deliveries, rows)
        mark_pending(conn)
    return len(rows)


def delivery_row(
    endpoint_id: str,
    tenant_id: str,
    event_id: int | None,
    event_type: str,
    now: float,
    *,
    hook_id: str | None = None,
    payload: dict[str, Any] | None = None,
) -> dict[str, Any]:
    delivery_id = new_id("whd", now)
    return {
        "id": delivery_id,
        "endpoint_id": endpoint_id,
        "event_id": event_id,
        "event_type": event_type,
        "tenant_id": tenant_id,
        "webhook_id": hook_id
        or (webhook_id(event_id, endpoint_id) if event_id is not None else delivery_id),
        "payload": payload,
        "status": "pending",
        "attempts": 0,
        "next_attempt_at": now,
        "created_at": now,
        "updated_at": now,
    }


def mark_pending(conn: Any) -> None:
    """Flag the transaction so its commit wakes the local dispatcher."""
    conn.info[PENDING_FLAG] = True
