"""A real send through aiosmtpd produces signed webhooks that verify with standardwebhooks."""

from __future__ import annotations

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from tests.support.app import live_app
from tests.support.http_receiver import HttpReceiver
from tests.support.smtpd import RecordingSmtpServer
from tests.webhooks_e2e.conftest import hook_settings, register, send_one, until, verify

pytestmark = pytest.mark.asyncio


async def test_sent_event_is_signed_and_verifies(database_url: str, receiver: HttpReceiver) -> None:
    with RecordingSmtpServer() as smtp:
        async with live_app(hook_settings(database_url, smtp.url)) as app:
            hook = await register(app, receiver.url_for("/hooks"), description="orders")
            assert hook["secret"].startswith("whsec_") and hook["events"] == []
            mid = await send_one(app, tags=["receipt"], metadata={"order": "42"})
            got = await receiver.wait_for_async(1, within=15)
            listed = (await app.client.get(f"/v1/webhooks/{hook['id']}")).json()
    assert "secret" not in listed  # shown once only
    assert len(smtp.handler.messages()) == 1
    req = got[0]
    assert req.method == "POST" and req.path == "/hooks"
    assert req.header("content-type") == "application/json"
    payload = verify(hook["secret"], req)
    # message.queued is opt-in: the first event an empty filter gets is message.sent.
    assert payload["type"] == "message.sent"
    data = payload["data"]
    assert data["message_id"] == mid and data["recipient"] == "ann@example.com"
    assert data["status"] == "sent" and data["attempt"] == 1 and data["seq"] == 2
    assert data["smtp"]["code"] == 250 and data["smtp"]["enhanced_code"] == "2.0.0"
    assert data["tags"] == ["receipt"] and data["metadata"] == {"order": "42"}
    assert payload["timestamp"].endswith("Z")
    assert req.header("webhook-id") == f"evt_{data['event_id']}_{hook['id'][4:]}"
    with pytest.raises(WebhookVerificationError):
        Webhook("whsec_" + "A" * 43 + "=").verify(req.body, req.headers)
    assert len(receiver.requests) == 1


async def test_rotation_old_and_new_secret_both_verify(
    database_url: str, receiver: HttpReceiver
) -> None:
    with RecordingSmtpServer() as smtp:
        async with live_app(hook_settings(database_url, smtp.url)) as app:
            hook = await register(app, receiver.url, events=["message.sent", "message.queued"])
            r = await app.client.post(f"/v1/webhooks/{hook['id']}/rotate-secret")
            assert r.status_code == 200, r.text
            new_secret = r.json()["secret"]
            assert new_secret != hook["secret"] and r.json()["previous_secrets_expire_at"]
            await send_one(app)
            got = await receiver.wait_for_async(2, within=15)
            # After the grace period only the new secret signs.
            async with live_app(
                hook_settings(database_url, smtp.url, webhook_secret_grace=0)
            ) as app2:
                r2 = await app2.client.post(f"/v1/webhooks/{hook['id']}/rotate-secret")
                newest = r2.json()["secret"]
                await app2.client.post(f"/v1/webhooks/{hook['id']}/test")
                later = await receiver.wait_for_async(3, within=15)
    types = sorted(verify(new_secret, q)["type"] for q in got)
    assert types == ["message.queued", "message.sent"]
    for q in got:
        assert len(q.header("webhook-signature").split(" ")) == 2
        verify(hook["secret"], q)
    test_req = later[2]
    assert verify(newest, test_req)["type"] == "webhook.test"
    assert len(test_req.header("webhook-signature").split(" ")) == 1
    with pytest.raises(WebhookVerificationError):
        verify(new_secret, test_req)


async def test_test_event_and_delivery_history(database_url: str, receiver: HttpReceiver) -> None:
    async with live_app(hook_settings(database_url)) as app:
        hook = await register(app, receiver.url)
        r = await app.client.post(f"/v1/webhooks/{hook['id']}/test")
        assert r.status_code == 202, r.text
        queued = r.json()
        got = await receiver.wait_for_async(1)

        async def settled() -> bool:
            rows = (await app.client.get(f"/v1/webhooks/{hook['id']}/deliveries")).json()["data"]
            return bool(rows) and rows[0]["status"] == "succeeded"

        await until(settled)
        rows = (await app.client.get(f"/v1/webhooks/{hook['id']}/deliveries")).json()["data"]
    assert got[0].header("webhook-id") == queued["webhook_id"]
    assert verify(hook["secret"], got[0])["data"]["endpoint_id"] == hook["id"]
    d = rows[0]
    assert d["id"] == queued["delivery_id"] and d["event_type"] == "webhook.test"
    assert d["attempts"] == 1 and d["last_status_code"] == 200
    assert [a["status_code"] for a in d["attempt_log"]] == [200]
    assert d["attempt_log"][0]["latency_ms"] > 0 and d["attempt_log"][0]["response"] == "ok"
