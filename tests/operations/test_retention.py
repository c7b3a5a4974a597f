"""Retention prunes old history of finished messages and nothing else."""

from __future__ import annotations

import time

from sqlalchemy import select, update

from service import retention
from service.db.engine import Database
from service.db.event_seq import last_seqs
from service.db.tables import (
    attempts,
    events,
    messages,
    recipients,
    webhook_attempts,
    webhook_deliveries,
)
from tests.operations.helpers import insert_queue

DAY = 86400.0


async def _history(db: Database, mids: list[str], at: float, status: str) -> None:
    """One attempt and one event per recipient of ``mids``, and a webhook delivery each."""
    async with db.write() as conn:
        await conn.execute(
            update(recipients).where(recipients.c.message_id.in_(mids)).values(status=status)
        )
        rows = (
            await conn.execute(
                select(recipients.c.id, recipients.c.message_id).where(
                    recipients.c.message_id.in_(mids)
                )
            )
        ).all()
        await conn.execute(
            attempts.insert(),
            [
                {
                    "recipient_id": rid,
                    "message_id": mid,
                    "number": 1,
                    "started_at": at,
                    "duration": 0.1,
                    "outcome": "accepted",
                    "stage": "done",
                    "possible_duplicate": False,
                }
                for rid, mid in rows
            ],
        )
        ids = (
            (
                await conn.execute(
                    events.insert().returning(events.c.id, sort_by_parameter_order=True),
                    [
                        {
                            "tenant_id": "default",
                            "message_id": mid,
                            "recipient_id": rid,
                            "seq": 1,
                            "type": "message.sent",
                            "created_at": at,
                            "data": {},
                        }
                        for rid, mid in rows
                    ],
                )
            )
            .scalars()
            .all()
        )
        await conn.execute(
            webhook_deliveries.insert(),
            [
                {
                    "id": f"whd_{status}_{ev}",
                    "endpoint_id": "ep",
                    "event_id": ev,
                    "event_type": "message.sent",
                    "tenant_id": "default",
                    "webhook_id": f"w{ev}",
                    "status": "succeeded",
                    "attempts": 1,
                    "next_attempt_at": at,
                    "created_at": at,
                    "updated_at": at,
                }
                for ev in ids
            ],
        )
        await conn.execute(
            webhook_attempts.insert(),
            [
                {"delivery_id": f"whd_{status}_{ev}", "number": 1, "at": at, "latency": 0.1}
                for ev in ids
            ],
        )


async def test_prune_removes_only_old_history_of_finished_messages(database_url: str) -> None:
    db = Database(database_url)
    now = time.time()
    try:
        old_done = await insert_queue(
            db,
            count=12,
            domain="example.com",
            created_at=now - 40 * DAY,
            next_attempt_at=now,
            per_message=3,
        )
        await _history(db, old_done, now - 40 * DAY, "sent")
        new_done = await insert_queue(
            db, count=2, domain="example.com", created_at=now - DAY, next_attempt_at=now
        )
        await _history(db, new_done, now - DAY, "sent")
        # Old, but still being retried: its history stays whatever its age.
        old_live = await insert_queue(
            db, count=2, domain="example.com", created_at=now - 40 * DAY, next_attempt_at=now
        )
        await _history(db, old_live, now - 40 * DAY, "deferred")

        policy = retention.RetentionPolicy(
            bodies=7 * DAY,
            attempts=30 * DAY,
            events=30 * DAY,
            webhook_deliveries=30 * DAY,
            batch_size=5,
            pause=0,
        )
        counts = await retention.prune(db, policy, now=now)
        assert counts == {"bodies": 4, "attempts": 12, "events": 12, "webhook_deliveries": 14}

        async with db.read() as conn:
            bodies = dict((await conn.execute(select(messages.c.id, messages.c.mime))).all())
            left_attempts = {
                r[0] for r in (await conn.execute(select(attempts.c.message_id))).all()
            }
            left_events = {r[0] for r in (await conn.execute(select(events.c.message_id))).all()}
            hooks = (await conn.execute(select(webhook_deliveries.c.id))).scalars().all()
            hook_attempts = (
                (await conn.execute(select(webhook_attempts.c.delivery_id))).scalars().all()
            )
        assert all(bodies[m] is None for m in old_done)
        assert all(bodies[m] is not None for m in new_done + old_live)
        assert left_attempts == set(new_done + old_live)
        assert left_events == set(new_done + old_live)
        # A finished webhook delivery goes by its own age, whatever its message's state.
        assert len(hooks) == 2 and len(hook_attempts) == 2
        assert sorted(hooks) == sorted(hook_attempts)
        # Nothing more to do the second time.
        assert sum((await retention.prune(db, policy, now=now)).values()) == 0
    finally:
        await db.dispose()


async def test_zero_age_keeps_everything(sqlite_url: str) -> None:
    db = Database(sqlite_url)
    now = time.time()
    try:
        old = await insert_queue(
            db, count=2, domain="example.com", created_at=now - 400 * DAY, next_attempt_at=now
        )
        await _history(db, old, now - 400 * DAY, "sent")
        keep = retention.RetentionPolicy(bodies=0, attempts=0, events=0, webhook_deliveries=0)
        assert sum((await retention.prune(db, keep, now=now)).values()) == 0
    finally:
        await db.dispose()


async def test_numbering_continues_after_a_message_s_events_are_deleted(
    database_url: str,
) -> None:
    """A late event (a bounce report after retention ran) takes the next number, not 1."""
    db = Database(database_url)
    now = time.time()
    try:
        [mid] = await insert_queue(
            db,
            count=3,
            domain="example.com",
            status="sent",
            created_at=now - 40 * DAY,
            next_attempt_at=now,
            per_message=3,
        )
        async with db.write() as conn:
            rids = (
                (await conn.execute(select(recipients.c.id).where(recipients.c.message_id == mid)))
                .scalars()
                .all()
            )
            await conn.execute(
                events.insert(),
                [
                    {
                        "tenant_id": "default",
                        "message_id": mid,
                        "recipient_id": rid,
                        "seq": seq,
                        "type": "message.sent",
                        "created_at": now - 40 * DAY,
                        "data": {},
                    }
                    for seq, rid in enumerate(rids, 1)
                ],
            )
        async with db.write() as conn:
            assert await last_seqs(conn, db.is_sqlite, [mid]) == {mid: 3}

        policy = retention.RetentionPolicy(
            bodies=0, attempts=0, events=30 * DAY, webhook_deliveries=0, batch_size=2, pause=0
        )
        assert (await retention.prune(db, policy, now=now))["events"] == 3

        async with db.write() as conn:
            assert (await conn.execute(select(events.c.id))).all() == []
            assert await last_seqs(conn, db.is_sqlite, [mid]) == {mid: 3}
    finally:
        await db.dispose()
