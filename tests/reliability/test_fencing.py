"""C4: a worker whose heartbeat stops loses its lease; its late result changes nothing."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Awaitable, Callable

import pytest
from sqlalchemy import update

from service.db import queue
from service.db.engine import Database
from service.db.tables import recipients
from service.delivery.smtp import SmtpTransport
from service.delivery.smtp_url import SmtpTarget, SmtpTimeouts
from service.delivery.transport import Outcome
from service.delivery.worker import Worker, WorkerOptions
from service.domain.retry import RetryPolicy
from tests.reliability.invariants import check, snapshot_async
from tests.reliability.seed import _seed
from tests.support.settlements import sent
from tests.support.smtp_script import Delivery, Script, ScriptedSmtpServer, Stall


async def wait_for(predicate: Callable[[], Awaitable[bool]], within: float) -> None:
    deadline = time.monotonic() + within
    while not await predicate():
        assert time.monotonic() < deadline, f"not within {within}s"
        await asyncio.sleep(0.02)


TIMEOUTS = SmtpTimeouts(
    connect=2, greeting=2, command=2, mail=2, rcpt=2, data=2, data_block=2, final_dot=5
)
POLICY = RetryPolicy(min_delay=0.1, max_delay=0.2, lifetime=60)


async def test_c4_stale_settle_is_fenced_off(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="service.delivery.worker")
    dots = itertools.count(1)

    def dot(_d: Delivery) -> str | Stall:
        # The first worker's session hangs at the final dot until after it lost the lease.
        return Stall(2.0, "250 2.0.0 late but fine") if next(dots) == 1 else "250 2.0.0 Ok"

    await _seed(database_url, ["c4@example.com"], 1)
    async with ScriptedSmtpServer(Script(dot=dot)) as server:
        target = SmtpTarget.parse(server.url())
        db = Database(database_url)
        slow = SmtpTransport(target, TIMEOUTS, pool_size=1)
        fast = SmtpTransport(target, TIMEOUTS, pool_size=1)
        stale = Worker(
            db,
            slow,
            policy=POLICY,
            # No heartbeat: the lease runs out while the session is still in progress.
            options=WorkerOptions(
                lease_seconds=0.5, heartbeat_interval=3600, batch_size=1, poll_interval=0.05
            ),
            name="stale",
        )
        current = Worker(
            db, fast, policy=POLICY, options=WorkerOptions(lease_seconds=10), name="current"
        )
        stop_stale, stop_current = asyncio.Event(), asyncio.Event()
        tasks = [asyncio.create_task(stale.run(stop_stale))]
        try:

            async def at_dot() -> bool:
                return any(c.saw("DATA") for c in server.connections)

            await wait_for(at_dot, within=10)
            tasks.append(asyncio.create_task(current.run(stop_current)))

            async def both_delivered() -> bool:
                return len(server.messages) == 2 and stale.inflight == 0

            await wait_for(both_delivered, within=15)
        finally:
            stop_stale.set()
            stop_current.set()
            await asyncio.wait_for(asyncio.gather(*tasks), 15)
            await slow.aclose()
            await fast.aclose()
            await db.dispose()

    snap = await snapshot_async(database_url)
    row = snap.recipient("c4@example.com")
    assert row["status"] == "sent" and row["possible_duplicate"]
    # Only the current owner's attempt was recorded; the stale one was dropped whole.
    (attempt,) = snap.attempts_of("c4@example.com")
    assert attempt["outcome"] == Outcome.ACCEPTED.value and attempt["possible_duplicate"]
    assert snap.events_of("c4@example.com") == ["message.queued", "message.sent"]
    assert "lease was lost" in caplog.text
    check(snap, server.messages, allow_duplicates={"c4@example.com"})


async def test_a_settle_with_one_lost_lease_writes_the_others(database_url: str) -> None:
    emails = [f"fence{i}@example.com" for i in range(3)]
    await _seed(database_url, emails, 3)
    db = Database(database_url)
    try:
        now = time.time()
        claimed = await queue.claim(
            db, owner="a", token="token-a", limit=3, lease_seconds=60, now=now
        )
        assert len(claimed) == 3
        lost = claimed[1]
        async with db.write() as conn:  # another worker reaped and took this one
            await conn.execute(
                update(recipients).where(recipients.c.id == lost.id).values(lease_token="token-b")
            )
        results = [
            sent(c.id, message_id=c.message_id, tenant_id=c.tenant_id, email=c.email,
                 token="token-a", started_at=now)
            for c in claimed
        ]  # fmt: skip
        done = await queue.settle(db, items=results, now=now + 1)
        assert sorted(done) == sorted(c.id for c in claimed if c is not lost)
        # The other settle still happens; the lost one is as its new owner holds it.
        again = await queue.settle(db, items=results, now=now + 2)
        assert again == []
    finally:
        await db.dispose()
    snap = await snapshot_async(database_url)
    for c in claimed:
        row = snap.recipient(c.email)
        if c is lost:
            assert (row["status"], row["lease_token"]) == ("sending", "token-b")
            assert snap.attempts_of(c.email) == []
        else:
            assert row["status"] == "sent" and row["lease_token"] is None
            assert len(snap.attempts_of(c.email)) == 1
            assert snap.events_of(c.email) == ["message.queued", "message.sent"]
