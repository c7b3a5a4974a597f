"""The API process of `kirim serve` delivers while it is idle and mail waits unclaimed.

Here no delivery process runs, so everything accepted waits until the API process's helper
takes it: it must deliver each message once, and claim nothing while a request is being
served (a request whose body is still arriving holds it off).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from urllib.parse import urlsplit

import pytest
from sqlalchemy import select

from service.db.engine import Database
from service.db.tables import recipients
from tests.support.app import live_app, settings_for, wait_for
from tests.support.smtpd import RecordingSmtpServer

pytestmark = pytest.mark.asyncio


def _batch(count: int) -> dict[str, object]:
    return {
        "messages": [
            {"from": "shop@example.com", "to": [f"u{i}@example.com"], "subject": "s", "text": "t"}
            for i in range(count)
        ]
    }


async def _statuses(database_url: str) -> Counter[str]:
    db = Database(database_url)
    try:
        async with db.read() as conn:
            rows = (await conn.execute(select(recipients.c.status))).scalars().all()
        return Counter(rows)
    finally:
        await db.dispose()


async def test_an_idle_api_delivers_the_backlog_once(database_url: str) -> None:
    with RecordingSmtpServer() as smtp:
        settings = settings_for(database_url, smtp.url)
        async with live_app(settings, run_workers=False, idle_delivery=True) as app:
            r = await app.client.post("/v1/messages/batch", json=_batch(40))
            assert r.status_code in (200, 202), r.text

            async def all_sent() -> bool:
                return (await _statuses(database_url)) == Counter({"sent": 40})

            await wait_for(all_sent)
    assert smtp.handler.counts() == Counter({f"u{i}@example.com": 1 for i in range(40)})


async def test_no_claim_while_a_request_is_in_progress(database_url: str) -> None:
    with RecordingSmtpServer() as smtp:
        settings = settings_for(database_url, smtp.url)
        async with live_app(settings, run_workers=False, idle_delivery=True) as app:
            # A request whose body is still on its way keeps the API busy.
            url = urlsplit(app.base_url)
            _reader, writer = await asyncio.open_connection(url.hostname, url.port)
            writer.write(
                b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Authorization: Bearer " + app.key.encode() + b"\r\n"
                b"Content-Length: 1000\r\n\r\n{"
            )
            await writer.drain()
            await asyncio.sleep(0.2)
            r = await app.client.post("/v1/messages/batch", json=_batch(5))
            assert r.status_code in (200, 202), r.text
            # Well past the helper's pauses (50 ms busy, 100 ms waited): still queued.
            await asyncio.sleep(1.5)
            assert await _statuses(database_url) == Counter({"queued": 5})
            assert smtp.handler.counts() == Counter()

            writer.close()  # the request ends (unanswered); the API is idle again

            async def all_sent() -> bool:
                return (await _statuses(database_url)) == Counter({"sent": 5})

            await wait_for(all_sent)
    assert sum(smtp.handler.counts().values()) == 5
