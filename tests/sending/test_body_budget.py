"""A worker holds no more message bytes in memory than its budget.

A claim of large messages is loaded and sent in parts that fit half the budget: with
300 KB messages and a 1 MiB budget, one message at a time, over one reused session, even
with sixteen sessions allowed. Small messages under the same budget still go out at once,
on many sessions.
"""

from __future__ import annotations

import pytest

from tests.sending.conftest import msg
from tests.support.app import live_app, settings_for, wait_for
from tests.support.holding_smtp import HoldingSmtpServer

pytestmark = pytest.mark.asyncio


async def _deliver(database_url: str, text: str) -> int:
    """Sessions the server saw while six messages with body ``text`` were delivered."""
    async with HoldingSmtpServer(hold=0.2) as server:
        settings = settings_for(
            database_url, server.url, smtp_pool_size=16, worker_body_budget_bytes=1 << 20
        )
        async with live_app(settings, run_workers=False) as app:
            bodies = [msg(f"r{i}@example.com", text=text) for i in range(6)]
            r = await app.client.post("/v1/messages/batch", json={"messages": bodies})
            assert r.status_code == 202, r.text
            ids = [item["id"] for item in r.json()["data"]]
        async with live_app(settings) as app:  # one claim finds all six waiting

            async def sent() -> bool:
                return all([(await app.get(mid))["status"] == "sent" for mid in ids])

            await wait_for(sent, within=30)
        assert len(server.received) == 6
        return server.connections


async def test_large_bodies_are_sent_one_part_at_a_time(database_url: str) -> None:
    assert await _deliver(database_url, "x" * 300_000) == 1


async def test_small_bodies_are_sent_together(database_url: str) -> None:
    assert await _deliver(database_url, "small") > 1
