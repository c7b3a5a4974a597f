"""The endpoints API: SSRF refusals at registration, tenant isolation, validation, replay."""

from __future__ import annotations

import socket
from datetime import UTC, datetime

import httpx
import pytest

from tests.support.app import live_app, make_key
from tests.support.http_receiver import HttpReceiver
from tests.support.smtpd import RecordingSmtpServer
from tests.webhooks_e2e.conftest import deliveries, hook_settings, register, send_one, until, verify

pytestmark = pytest.mark.asyncio


def _hostname_on_loopback() -> str:
    # A name from /etc/hosts (no DNS query leaves the machine) that maps to 127.0.0.1.
    name = socket.gethostname()
    addresses = {i[4][0] for i in socket.getaddrinfo(name, 80, proto=socket.IPPROTO_TCP)}
    assert addresses and all(a.startswith("127.") or a == "::1" for a in addresses), addresses
    return name


async def test_ssrf_matrix_refused_at_registration_without_connecting(
    database_url: str, receiver: HttpReceiver, connect_spy_loopback: list[tuple[str, int]]
) -> None:
    port = receiver.port
    urls = [
        f"http://127.0.0.1:{port}/",
        f"http://[::1]:{port}/",
        f"http://0.0.0.0:{port}/",
        "http://10.0.0.1/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::ffff:169.254.169.254]/",
        "http://[64:ff9b::a9fe:a9fe]/",
        "http://224.0.0.1/",
        f"http://2130706433:{port}/",
        f"http://0x7f.1:{port}/",
        f"http://127.1:{port}/",
        f"http://localhost:{port}/",
        f"http://foo.localhost:{port}/",
        f"http://{_hostname_on_loopback()}:{port}/",
        f"ftp://127.0.0.1:{port}/",
        f"http://user:pw@127.0.0.1:{port}/",
    ]
    # No allow list here: the defaults refuse every private address.
    async with live_app(hook_settings(database_url, webhook_allowed_networks="")) as app:
        before = len(connect_spy_loopback)
        for url in urls:
            r = await app.client.post("/v1/webhooks", json={"url": url})
            assert r.status_code == 422, (url, r.text)
            problem = r.json()
            assert r.headers["content-type"].startswith("application/problem+json")
            assert problem["errors"][0]["field"] == "url", problem
            assert problem["errors"][0]["message"], problem
        made = connect_spy_loopback[before:]
        listed = (await app.client.get("/v1/webhooks")).json()["data"]
    assert listed == []
    assert receiver.requests == []
    # The only connections were the test client's to the app and the app's to its database.
    app_port = int(app.base_url.rsplit(":", 1)[1])
    db_port = httpx.URL(database_url).port if database_url.startswith("postgresql") else None
    assert {h for h, _p in made} <= {"127.0.0.1"}, made
    assert {p for _h, p in made} <= {app_port, db_port}, made


async def test_validation_errors(database_url: str, receiver: HttpReceiver) -> None:
    async with live_app(hook_settings(database_url)) as app:
        r = await app.client.post(
            "/v1/webhooks", json={"url": receiver.url, "events": ["message.sent", "nope"]}
        )
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "events"
        hook = await register(app, receiver.url, events=["message.bounced"])
        r = await app.client.post(f"/v1/webhooks/{hook['id']}/replay", json={})
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "since"
        r = await app.client.patch(f"/v1/webhooks/{hook['id']}", json={"url": "http://10.1.1.1/"})
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "url"
        r = await app.client.patch(
            f"/v1/webhooks/{hook['id']}", json={"description": "new", "events": []}
        )
        assert r.status_code == 200 and r.json()["description"] == "new"
        assert r.json()["events"] == []
    assert receiver.requests == []


async def test_other_tenant_gets_404_everywhere(database_url: str, receiver: HttpReceiver) -> None:
    async with live_app(hook_settings(database_url)) as app:
        hook = await register(app, receiver.url)
        other_key = await make_key(app_db_url(app), tenant="other")
        async with httpx.AsyncClient(
            base_url=app.base_url, headers={"Authorization": f"Bearer {other_key}"}, trust_env=False
        ) as other:
            base = f"/v1/webhooks/{hook['id']}"
            answers = [
                await other.get(base),
                await other.patch(base, json={"description": "mine now"}),
                await other.delete(base),
                await other.post(base + "/replay", json={"since_event_id": 1}),
                await other.get(base + "/deliveries"),
                await other.post(base + "/rotate-secret"),
                await other.post(base + "/test"),
            ]
            assert (await other.get("/v1/webhooks")).json()["data"] == []
        assert [a.status_code for a in answers] == [404] * 7
        assert all(a.json()["type"].endswith("not-found") for a in answers)
        still = (await app.client.get(base)).json()
        assert still["description"] == ""
        r = await app.client.delete(base)
        assert r.status_code == 204
        assert (await app.client.get(base)).status_code == 404
    assert receiver.requests == []


def app_db_url(app: object) -> str:
    url: str = app.app.state.runtime.settings.database_url.get_secret_value()  # type: ignore[attr-defined]
    return url


async def test_replay_resends_matching_events(database_url: str, receiver: HttpReceiver) -> None:
    with RecordingSmtpServer() as smtp:
        async with live_app(hook_settings(database_url, smtp.url)) as app:
            # Events before the endpoint existed are replayable too.
            first = await send_one(app, to="a@example.com")

            async def sent() -> bool:
                return (await app.get(first))["status"] == "sent"

            await until(sent)
            hook = await register(app, receiver.url)
            await send_one(app, to="b@example.com")
            live = await receiver.wait_for_async(1)
            first_event = (await app.get(first))["events"][1]
            assert first_event["type"] == "message.sent"
            r = await app.client.post(
                f"/v1/webhooks/{hook['id']}/replay", json={"since_event_id": first_event["id"]}
            )
            assert r.status_code == 202, r.text
            assert r.json() == {"count": 2}
            got = await receiver.wait_for_async(3)
            r = await app.client.post(
                f"/v1/webhooks/{hook['id']}/replay",
                json={"since": datetime.now(UTC).isoformat()},
            )
            assert r.json() == {"count": 0}
            rows = await deliveries(app, hook["id"], limit=2)
            page2 = await deliveries(app, hook["id"], limit=2, cursor=rows[-1]["id"])
    recipients = sorted(verify(hook["secret"], q)["data"]["recipient"] for q in got)
    assert recipients == ["a@example.com", "b@example.com", "b@example.com"]
    # A replayed event keeps its webhook-id, so receivers can recognise it.
    assert [q.header("webhook-id") for q in got].count(live[0].header("webhook-id")) == 2
    assert len(rows) == 2 and len(page2) == 1
    assert {d["id"] for d in rows}.isdisjoint({d["id"] for d in page2})
