"""Event ids reserved before the INSERT: unique, in order, and what the deliveries name."""

from __future__ import annotations

import asyncio
import time

from sqlalchemy import select

from service.db import queue
from service.db.accepts import insert_messages
from service.db.engine import Database
from service.db.reserved_ids import reserve_ids
from service.db.tables import events, webhook_deliveries
from service.domain import envelope
from service.domain.retry import RetryPolicy
from service.submission import prepare
from service.webhooks import endpoints
from service.webhooks.events import webhook_id
from tests.support.settlements import sent


def _event(message_id: str) -> dict[str, object]:
    return {
        "tenant_id": "t",
        "message_id": message_id,
        "recipient_id": None,
        "seq": 1,
        "type": "message.sent",
        "created_at": 1.0,
        "data": {},
    }


async def test_reserved_ids_are_unused_and_ahead_of_the_default(database_url: str) -> None:
    db = Database(database_url)
    try:
        async with db.write() as conn:
            await conn.execute(events.insert(), [_event("msg_a"), _event("msg_b")])

        # Two writers at once (PostgreSQL runs them side by side; SQLite one after the other).
        async def reserve_and_insert(tag: str) -> list[int]:
            async with db.write() as conn:
                ids = await reserve_ids(conn, events, 5)
                assert ids is not None
                await conn.execute(events.insert(), [{**_event(tag), "id": i} for i in ids])
                return ids

        first, second = await asyncio.gather(reserve_and_insert("x"), reserve_and_insert("y"))
        async with db.write() as conn:
            await conn.execute(events.insert(), [_event("msg_c")])
            assert await reserve_ids(conn, events, 0) == []
        async with db.read() as conn:
            stored = dict((await conn.execute(select(events.c.id, events.c.message_id))).all())
    finally:
        await db.dispose()
    assert first == sorted(first) and len(set(first + second)) == 10
    assert min(first + second) > max(i for i, m in stored.items() if m in ("msg_a", "msg_b"))
    later = next(i for i, m in stored.items() if m == "msg_c")
    assert later > max(first + second)


async def _seed(db: Database, tenant: str, n: int) -> None:
    items = []
    for i in range(n):
        draft = envelope.compose(
            sender="app@example.com",
            to=[f"{tenant}{i}@example.com"],
            cc=[f"{tenant}{i}.cc@example.com"],
            subject="s",
            text="t",
        )
        rows, _ = prepare(
            draft,
            tenant_id=tenant,
            now=time.time() - 5,
            policy=RetryPolicy(),
            message_id_domain="kirim.test",
        )
        items.append(rows)
    await insert_messages(db, items)


def _sent(c: queue.Claimed, token: str, now: float) -> queue.Settlement:
    return sent(
        c.id,
        message_id=c.message_id,
        tenant_id=c.tenant_id,
        email=c.email,
        token=token,
        attempt_number=c.attempts + 1,
        started_at=now,
    )


async def test_settle_deliveries_name_their_events(database_url: str) -> None:
    db = Database(database_url)
    try:
        endpoint, _ = await endpoints.create(
            db, tenant_id="hooked", url="http://127.0.0.1:9/", types=[], description="", now=1.0
        )
        await _seed(db, "hooked", 6)
        await _seed(db, "plain", 6)
        now = time.time()
        claimed = await queue.claim(
            db, owner="w", token="tok", limit=100, lease_seconds=60, now=now
        )
        assert len(claimed) == 24
        # Two settles: the second one's ids follow the first's. A result under a token the
        # row is not held with is dropped and writes no event.
        stale = _sent(claimed[0], "other", now)
        done = await queue.settle(
            db, items=[stale, *(_sent(c, "tok", now) for c in claimed[1:10])], now=now
        )
        assert len(done) == 9
        done += await queue.settle(db, items=[_sent(c, "tok", now) for c in claimed[10:]], now=now)
        async with db.read() as conn:
            evs = (await conn.execute(select(events).where(events.c.type == "message.sent"))).all()
            deliveries = (await conn.execute(select(webhook_deliveries))).all()
    finally:
        await db.dispose()
    assert sorted(e.recipient_id for e in evs) == sorted(done)
    assert claimed[0].id not in done
    # Within a message, ids follow the sequence numbers.
    by_message: dict[str, list[tuple[int, int]]] = {}
    for e in evs:
        by_message.setdefault(e.message_id, []).append((e.seq, e.id))
    for pairs in by_message.values():
        assert [i for _, i in sorted(pairs)] == sorted(i for _, i in pairs)
    hooked = {e.id: e for e in evs if e.tenant_id == "hooked"}
    assert len(deliveries) == len(hooked) > 0
    for d in deliveries:
        e = hooked[d.event_id]
        assert (d.event_type, d.tenant_id) == (e.type, e.tenant_id)
        assert d.endpoint_id == endpoint["id"]
        assert d.webhook_id == webhook_id(e.id, endpoint["id"])
