"""The admin API: bulk retry/cancel by filter with dry run, pause and resume by domain."""

from __future__ import annotations

import asyncio
import time

from sqlalchemy import func, select

from service.db.engine import Database
from service.db.tables import events, recipients, webhook_deliveries
from tests.operations.helpers import ADMIN_SCOPES, insert_queue
from tests.support.app import live_app, make_key, settings_for, wait_for
from tests.support.smtpd import RecordingSmtpServer


async def _count(db: Database, *where: object) -> int:
    async with db.read() as conn:
        return int((await conn.execute(select(func.count()).where(*where))).scalar() or 0)


async def test_bulk_retry_of_1000_deferred_recipients_by_domain(database_url: str) -> None:
    db = Database(database_url)
    now = time.time()
    later = now + 3600
    try:
        await insert_queue(
            db, count=1000, domain="stuck.example.com", created_at=now, next_attempt_at=later
        )
        await insert_queue(
            db, count=30, domain="other.example.com", created_at=now, next_attempt_at=later
        )
        admin = await make_key(database_url, scopes=ADMIN_SCOPES)
        async with live_app(settings_for(database_url), run_workers=False) as app:
            h = {"Authorization": f"Bearer {admin}"}
            body = {"domain": "Stuck.Example.com", "status": ["deferred"]}
            # A key without the admin scope is refused.
            r = await app.client.post("/v1/admin/recipients/retry", json=body)
            assert r.status_code == 403
            r = await app.client.post(
                "/v1/admin/recipients/retry", json={**body, "dry_run": True}, headers=h
            )
            assert r.status_code == 200, r.text
            assert r.json() == {"action": "retry", "matched": 1000, "changed": 0, "dry_run": True}
            assert await _count(db, recipients.c.next_attempt_at <= time.time()) == 0

            r = await app.client.post("/v1/admin/recipients/retry", json=body, headers=h)
            assert r.json() == {
                "action": "retry",
                "matched": 1000,
                "changed": 1000,
                "dry_run": False,
            }
            due = recipients.c.next_attempt_at <= time.time()
            at_stuck = recipients.c.email.like("%@stuck.example.com")
            assert await _count(db, due, at_stuck, recipients.c.status == "deferred") == 1000
            assert await _count(db, due, ~at_stuck) == 0
            # Nothing left to retry: a second run matches nothing.
            r = await app.client.post("/v1/admin/recipients/retry", json=body, headers=h)
            assert r.json()["matched"] == 0

            stats = (await app.client.get("/v1/admin/stats", headers=h)).json()
            assert stats["recipients"] == {"deferred": 1030}
            assert stats["waiting_by_domain"][0] == {"domain": "stuck.example.com", "count": 1000}
    finally:
        await db.dispose()


async def test_cancel_by_tenant_and_age_writes_events(database_url: str) -> None:
    db = Database(database_url)
    now = time.time()
    try:
        await insert_queue(
            db,
            count=5,
            domain="example.com",
            tenant="t1",
            created_at=now - 7200,
            next_attempt_at=now + 60,
        )
        await insert_queue(
            db, count=4, domain="example.com", tenant="t1", created_at=now, next_attempt_at=now + 60
        )
        await insert_queue(
            db,
            count=3,
            domain="example.com",
            tenant="t2",
            created_at=now - 7200,
            next_attempt_at=now + 60,
        )
        admin = await make_key(database_url, scopes=ADMIN_SCOPES)
        async with live_app(settings_for(database_url), run_workers=False) as app:
            h = {"Authorization": f"Bearer {admin}"}
            bad = await app.client.post(
                "/v1/admin/recipients/cancel", json={"status": ["sent"]}, headers=h
            )
            assert bad.status_code == 422
            body = {"tenant": "t1", "older_than": 3600}
            r = await app.client.post("/v1/admin/recipients/cancel", json=body, headers=h)
            assert r.json()["changed"] == 5
        assert await _count(db, recipients.c.status == "cancelled") == 5
        assert (
            await _count(db, recipients.c.status == "cancelled", recipients.c.tenant_id != "t1")
            == 0
        )
        assert await _count(db, events.c.type == "message.cancelled") == 5
        async with db.read() as conn:
            data = (await conn.execute(select(events.c.data).limit(1))).scalar()
        assert data["status"] == "cancelled" and data["tags"] == ["t"]
        # The webhook outbox is fed like any settle (no endpoints here: no rows).
        assert await _count(db, webhook_deliveries.c.id.is_not(None)) == 0
    finally:
        await db.dispose()


async def test_pause_and_resume_delivery_by_domain(database_url: str) -> None:
    with RecordingSmtpServer() as smtp:
        settings = settings_for(database_url, smtp.url)
        admin = await make_key(database_url, scopes=ADMIN_SCOPES)
        async with live_app(settings) as app:
            h = {"Authorization": f"Bearer {admin}"}
            r = await app.client.post(
                "/v1/admin/pauses",
                json={"kind": "domain", "value": "Held.Example.com", "reason": "blocklisted"},
                headers=h,
            )
            assert r.status_code == 201, r.text
            again = await app.client.post(
                "/v1/admin/pauses", json={"kind": "domain", "value": "held.example.com"}, headers=h
            )
            assert again.status_code == 200
            held = await app.send(
                **{
                    "from": "s@example.org",
                    "to": ["a@held.example.com"],
                    "subject": "h",
                    "text": "x",
                }
            )
            free = await app.send(
                **{
                    "from": "s@example.org",
                    "to": ["b@free.example.com"],
                    "subject": "f",
                    "text": "x",
                }
            )
            hid, fid = held.json()["id"], free.json()["id"]

            async def free_sent() -> bool:
                return (await app.get(fid))["status"] == "sent"

            await wait_for(free_sent)
            await asyncio.sleep(0.5)  # many poll intervals: the paused one stays put
            assert (await app.get(hid))["status"] == "queued"
            assert smtp.handler.counts()["a@held.example.com"] == 0
            listed = (await app.client.get("/v1/admin/pauses", headers=h)).json()
            assert [(p["kind"], p["value"]) for p in listed] == [("domain", "held.example.com")]

            r = await app.client.delete("/v1/admin/pauses/domain/held.example.com", headers=h)
            assert r.status_code == 204

            async def held_sent() -> bool:
                return (await app.get(hid))["status"] == "sent"

            await wait_for(held_sent)
            assert smtp.handler.counts()["a@held.example.com"] == 1
            r = await app.client.delete("/v1/admin/pauses/domain/held.example.com", headers=h)
            assert r.status_code == 404


async def test_pause_by_tenant_holds_only_that_tenant(sqlite_url: str) -> None:
    from service.admin import pauses
    from service.db import queue

    db = Database(sqlite_url)
    now = time.time()
    try:
        await insert_queue(
            db,
            count=3,
            domain="example.com",
            tenant="quiet",
            created_at=now,
            next_attempt_at=now - 1,
        )
        await insert_queue(
            db,
            count=2,
            domain="example.com",
            tenant="loud",
            created_at=now,
            next_attempt_at=now - 1,
        )
        assert await pauses.pause(db, "tenant", "quiet", reason="", now=now)
        got = await queue.claim(db, owner="w", token="t", limit=100, lease_seconds=30, now=now)
        assert sorted({c.tenant_id for c in got}) == ["loud"] and len(got) == 2
        assert await queue.next_due(db) is None  # an idle worker does not spin on paused rows
        assert await pauses.resume(db, "tenant", "quiet")
        got = await queue.claim(db, owner="w", token="t2", limit=100, lease_seconds=30, now=now)
        assert len(got) == 3
    finally:
        await db.dispose()
