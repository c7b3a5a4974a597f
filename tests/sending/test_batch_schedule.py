"""Batch, scheduling, cancel, expiry and priority through real SMTP delivery."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from tests.sending.conftest import msg, statuses
from tests.support.app import live_app, settings_for, wait_for
from tests.support.smtpd import RecordingHandler, RecordingSmtpServer

pytestmark = pytest.mark.asyncio


def at(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


async def test_batch_500_with_three_invalid(database_url: str) -> None:
    items = [msg(f"u{i}@example.com", tags=["bulk"]) for i in range(500)]
    items[7]["to"] = ["not an address"]
    items[250].pop("from")
    items[499]["expires_at"] = "2001-01-01T00:00:00Z"
    with RecordingSmtpServer() as smtp:
        async with live_app(settings_for(database_url, smtp.url)) as app:
            r = await app.client.post(
                "/v1/messages/batch", json={"messages": items, "atomic": True}
            )
            assert r.status_code == 422
            assert {e["loc"][1] for e in r.json()["errors"]} == {7, 250, 499}
            listed = await app.client.get("/v1/messages")
            assert listed.json()["data"] == []

            started = time.perf_counter()
            r = await app.client.post("/v1/messages/batch", json={"messages": items})
            took = time.perf_counter() - started
            assert r.status_code == 202, r.text
            body = r.json()
            assert (body["accepted"], body["rejected"]) == (497, 3)
            data = body["data"]
            assert [d["index"] for d in data] == list(range(500))
            assert data[7]["errors"][0]["field"] == "messages.7.to.0"
            assert data[250]["errors"][0]["field"] == "messages.250.from"
            assert data[499]["errors"][0]["field"] == "messages.499.expires_at"
            assert "id" not in data[7] and data[8]["status"] == "queued"
            print(f"batch accept: {497 / took:.0f} messages/s ({database_url.split(':')[0]})")

            async def all_sent() -> bool:
                return sum(smtp.handler.counts().values()) >= 497

            await wait_for(all_sent, within=60)
            assert await statuses(app, data[8]["id"]) == {"u8@example.com": "sent"}
    counts = smtp.handler.counts()
    assert len(counts) == 497 and "u7@example.com" not in counts
    assert set(counts.values()) == {1}


async def test_batch_limit_is_enforced(sqlite_url: str) -> None:
    settings = settings_for(sqlite_url, batch_max=2)
    async with live_app(settings, run_workers=False) as app:
        r = await app.client.post(
            "/v1/messages/batch", json={"messages": [msg("a@example.com")] * 3}
        )
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "messages"


async def test_scheduled_cancelled_and_delivered_after_due(database_url: str) -> None:
    with RecordingSmtpServer() as smtp:
        async with live_app(settings_for(database_url, smtp.url)) as app:
            due = time.time() + 1.5
            keep = await app.send(**msg("keep@example.com", send_at=at(due)))
            drop = await app.send(**msg("drop@example.com", send_at=at(due)))
            assert keep.json()["status"] == "scheduled"
            drop_id = drop.json()["id"]
            c = await app.client.post(f"/v1/messages/{drop_id}/cancel")
            assert c.status_code == 200, c.text
            assert [r["email"] for r in c.json()["cancelled"]] == ["drop@example.com"]
            again = await app.client.post(f"/v1/messages/{drop_id}/cancel")
            assert again.status_code == 200 and again.json()["cancelled"] == []

            async def kept_sent() -> bool:
                return (await statuses(app, keep.json()["id"]))["keep@example.com"] == "sent"

            await wait_for(kept_sent, within=15)
            delivered_at = time.time()
            dropped = await app.get(drop_id)
    assert delivered_at >= due
    assert dropped["status"] == "cancelled"
    assert [e["type"] for e in dropped["events"]] == ["message.scheduled", "message.cancelled"]
    assert dropped["events"][1]["seq"] == 2
    assert set(smtp.handler.counts()) == {"keep@example.com"}


async def test_cancel_unknown_and_other_tenant(sqlite_url: str) -> None:
    from tests.support.app import make_key

    async with live_app(settings_for(sqlite_url), run_workers=False) as app:
        mid = (await app.send(**msg("a@example.com"))).json()["id"]
        other = await make_key(sqlite_url, tenant="other")
        r = await app.client.post(
            f"/v1/messages/{mid}/cancel", headers={"Authorization": f"Bearer {other}"}
        )
        assert r.status_code == 404
        assert (await app.client.post("/v1/messages/msg_x/cancel")).status_code == 404


async def test_expires_at_fails_expired(database_url: str) -> None:
    handler = RecordingHandler(rcpt_reply=lambda rcpt: "451 4.3.0 Try later")
    with RecordingSmtpServer(handler) as smtp:
        async with live_app(settings_for(database_url, smtp.url)) as app:
            r = await app.send(**msg("late@example.com", expires_at=at(time.time() + 1.0)))
            mid = r.json()["id"]

            async def failed() -> bool:
                return (await statuses(app, mid))["late@example.com"] == "failed"

            await wait_for(failed, within=15)
            m = await app.get(mid)
    assert m["recipients"][0]["reason"] == "expired"
    assert m["events"][-1]["type"] == "message.failed"
    assert m["events"][-1]["data"]["reason"] == "expired"


async def test_expires_at_validation(sqlite_url: str) -> None:
    async with live_app(settings_for(sqlite_url), run_workers=False) as app:
        now = time.time()
        r = await app.send(**msg("a@example.com", send_at=at(now + 60), expires_at=at(now + 30)))
        assert r.status_code == 422
        assert [e["field"] for e in r.json()["errors"]] == ["expires_at"]
        r = await app.send(**msg("a@example.com", send_at="2030-01-01T00:00:00"))
        assert r.status_code == 422  # no offset: ambiguous
        r = await app.send(**msg("a@example.com", priority="urgent"))
        assert r.status_code == 422


async def test_high_priority_overtakes_5000_low(database_url: str) -> None:
    with RecordingSmtpServer() as smtp:
        # The default batch (1024): the worker already holds many low ones when the high one
        # comes, and the high one still takes the next free session once claimed.
        settings = settings_for(database_url, smtp.url)
        assert settings.worker_batch_size == 1024
        # Accept everything first, then deliver: the backlog is in place when the
        # high-priority message arrives.
        async with live_app(settings, run_workers=False) as app:
            for chunk in range(10):
                items = [msg(f"low{chunk}-{i}@example.com", priority="low") for i in range(500)]
                r = await app.client.post("/v1/messages/batch", json={"messages": items})
                assert r.status_code == 202
        async with live_app(settings) as app:
            await wait_for(lambda: _some(smtp), within=15, interval=0.005)
            sent_before = sum(smtp.handler.counts().values())
            started = time.monotonic()
            r = await app.send(**msg("otp@example.com", priority="high", subject="Your code"))
            mid = r.json()["id"]

            async def high_sent() -> bool:
                return "otp@example.com" in smtp.handler.counts()

            await wait_for(high_sent, within=30, interval=0.01)
            took = time.monotonic() - started
            low_done = sum(smtp.handler.counts().values())
            assert (await app.get(mid))["priority"] == "high"
    meanwhile = low_done - sent_before
    print(f"\nhigh priority: {took * 1000:.0f} ms, {meanwhile} low sent meanwhile")
    # Measured in messages, not seconds: what the worker already held (one batch) and at
    # most one refill claimed before the wake-up was seen went first, not the backlog. A
    # loaded machine slows the high one's accept while sessions keep sending (336 seen
    # under the full suite), so the bound is two batches; without priority it is ~5,000.
    assert sent_before < 5000 and meanwhile <= 2 * 256, (sent_before, low_done)


async def _some(smtp: RecordingSmtpServer) -> bool:
    return sum(smtp.handler.counts().values()) > 0
