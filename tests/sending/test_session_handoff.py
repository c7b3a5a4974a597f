"""The worker starts its next message on a session while the last one waits for its dot.

With one SMTP session and one delivery slot, each message's MAIL must reach the server
before the reply to the previous message's final dot, which the server holds back (see
``tests.support.holding_smtp``): the slot passes on when the transport hands the session
on, not when the reply comes. Statuses still follow the replies.
"""

from __future__ import annotations

import pytest

from tests.sending.conftest import msg
from tests.support.app import live_app, settings_for, wait_for
from tests.support.holding_smtp import HoldingSmtpServer

pytestmark = pytest.mark.asyncio


async def test_each_message_follows_the_previous_dot(database_url: str) -> None:
    def dot(n: int) -> bytes:
        return b"550 5.1.1 no such user\r\n" if n == 2 else b"250 2.0.0 queued\r\n"

    async with HoldingSmtpServer(hold=1.0, dot=dot) as server:
        settings = settings_for(database_url, server.url, smtp_pool_size=1)
        async with live_app(settings) as app:
            bodies = [msg(f"r{i}@example.com") for i in range(5)]
            r = await app.client.post("/v1/messages/batch", json={"messages": bodies})
            assert r.status_code == 202, r.text
            ids = [item["id"] for item in r.json()["data"]]

            async def settled() -> bool:
                states = [(await app.get(mid))["status"] for mid in ids]
                return all(s in ("sent", "bounced") for s in states)

            await wait_for(settled, within=30)
            recipients = [(await app.get(mid))["recipients"][0] for mid in ids]
    # One claim of all five, sent in order on the one session: every MAIL but the last
    # followed the dot before it, and nothing waited for a held reply.
    assert [r.early for r in server.received] == [True, True, True, True, False]
    assert server.connections == 1
    # The third message to arrive (the claim's order) was refused; the others were sent.
    refused = server.received[2].body.split(b"To: ")[1].split(b"\r\n")[0].decode()
    statuses = {r["email"]: r["status"] for r in recipients}
    assert statuses == {
        f"r{i}@example.com": "bounced" if f"r{i}@example.com" == refused else "sent"
        for i in range(5)
    }
