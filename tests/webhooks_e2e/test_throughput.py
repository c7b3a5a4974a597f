"""How many events per second the dispatcher sustains to a local receiver (printed)."""

from __future__ import annotations

import asyncio
import time

import pytest
from sqlalchemy import func, select

from service.db.engine import Database
from service.db.tables import webhook_deliveries
from service.settings import Settings
from service.webhooks import endpoints
from service.webhooks.dispatcher import Dispatcher, options_from
from service.webhooks.outbox import record_events
from service.webhooks.ssrf import parse_networks
from tests.support.http_receiver import HttpReceiver
from tests.webhooks_e2e.conftest import until

pytestmark = pytest.mark.asyncio
EVENTS = 600


async def test_dispatcher_throughput(database_url: str, receiver: HttpReceiver) -> None:
    db = Database(database_url)
    try:
        await endpoints.create(
            db,
            tenant_id="t",
            url=receiver.url,
            types=["message.queued"],
            description="",
            now=time.time(),
        )
        now = time.time()
        rows = [
            {
                "tenant_id": "t",
                "message_id": f"msg_{i}",
                "recipient_id": None,
                "seq": 1,
                "type": "message.queued",
                "created_at": now,
                "data": {"i": i},
            }
            for i in range(EVENTS)
        ]
        async with db.write() as conn:
            made = await record_events(conn, rows)
        assert made == EVENTS
        settings = Settings(
            database_url=database_url,
            webhook_allowed_networks="127.0.0.0/8",
            webhook_concurrency_per_endpoint=32,
        )
        opts = options_from(settings)
        assert opts.allowed_networks == parse_networks("127.0.0.0/8")
        dispatcher = Dispatcher(db, opts)
        stop = asyncio.Event()
        started = time.perf_counter()
        task = asyncio.create_task(dispatcher.run(stop))

        async def all_done() -> bool:
            async with db.read() as conn:
                left = (
                    await conn.execute(
                        select(func.count()).where(webhook_deliveries.c.status != "succeeded")
                    )
                ).scalar()
            return left == 0

        await until(all_done, within=120, interval=0.1)
        elapsed = time.perf_counter() - started
        stop.set()
        await task
    finally:
        await db.dispose()
    rate = EVENTS / elapsed
    kind = database_url.split(":", 1)[0]
    print(f"\nwebhook dispatcher, {kind}: {EVENTS} events in {elapsed:.2f}s = {rate:.0f} events/s")
    # Every event arrived; the rate is printed, never asserted (a loaded machine is slow).
    assert len(receiver.requests) == EVENTS
