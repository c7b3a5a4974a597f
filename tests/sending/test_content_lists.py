"""Templates, preview, raw MIME, suppressions, search and the events feed, end to end."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from tests.sending.conftest import msg, statuses
from tests.support.app import LiveApp, live_app, make_key, settings_for, wait_for
from tests.support.smtpd import RecordingHandler, RecordingSmtpServer

pytestmark = pytest.mark.asyncio


def _strip(data: bytes) -> bytes:
    """The bytes without the headers made afresh at every accept."""
    keep = [
        line
        for line in data.split(b"\r\n")
        if not line.lower().startswith((b"message-id:", b"date:"))
    ]
    return b"\r\n".join(keep)


async def _delivered(app: LiveApp, mid: str, email: str) -> None:
    async def done() -> bool:
        return (await statuses(app, mid))[email] in ("sent", "bounced", "failed")

    await wait_for(done, within=15)


async def test_template_escaping_missing_variable_and_preview(database_url: str) -> None:
    with RecordingSmtpServer() as smtp:
        async with live_app(settings_for(database_url, smtp.url)) as app:
            t = await app.client.post(
                "/v1/templates",
                json={
                    "name": "welcome",
                    "subject": "Hi {{ name }}",
                    "html": "<p>Hello {{ name }}</p>",
                },
            )
            assert t.status_code == 201, t.text
            assert t.json()["variables"] == ["name"]
            dup = await app.client.post(
                "/v1/templates", json={"name": "welcome", "subject": "x", "text": "y"}
            )
            assert dup.status_code == 409
            bad = await app.client.post(
                "/v1/templates", json={"name": "broken", "subject": "{{ x", "text": "y"}
            )
            assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "subject"

            body: dict[str, Any] = {
                "from": "shop@example.com",
                "to": ["ann@example.com"],
                "template": "welcome",
                "variables": {"name": "<script>alert(1)</script>"},
            }
            missing = await app.send(**{**body, "variables": {}})
            assert missing.status_code == 422
            assert [e["field"] for e in missing.json()["errors"]] == ["variables.name"]

            preview = await app.client.post("/v1/messages/preview", json=body)
            assert preview.status_code == 200
            assert preview.headers["content-type"].startswith("message/rfc822")
            r = await app.send(**body)
            assert r.status_code == 202, r.text
            await _delivered(app, r.json()["id"], "ann@example.com")
            listed = await app.client.get("/v1/messages")
    received = smtp.handler.messages()[0].data
    assert b"&lt;script&gt;alert(1)&lt;/script&gt;" in received
    assert b"<script>" not in received.split(b"\r\n\r\n", 1)[1]
    assert _strip(preview.content) == _strip(received)
    assert len(listed.json()["data"]) == 1  # preview stored nothing


async def test_template_crud_and_tenant_isolation(sqlite_url: str) -> None:
    async with live_app(settings_for(sqlite_url), run_workers=False) as app:
        t = (
            await app.client.post(
                "/v1/templates", json={"name": "a", "subject": "s", "text": "{{ x }}"}
            )
        ).json()
        other = {"Authorization": f"Bearer {await make_key(sqlite_url, tenant='other')}"}
        assert (await app.client.get(f"/v1/templates/{t['id']}", headers=other)).status_code == 404
        assert (await app.client.get("/v1/templates", headers=other)).json()["data"] == []
        r = await app.client.post(
            "/v1/messages",
            json={
                "from": "a@example.com",
                "to": ["b@example.com"],
                "template": "a",
                "variables": {"x": 1},
            },
            headers=other,
        )
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "template"
        u = await app.client.put(
            "/v1/templates/a", json={"name": "b", "subject": "s2", "text": "t"}
        )
        assert u.status_code == 200 and u.json()["name"] == "b"
        assert (await app.client.get("/v1/templates/b")).json()["subject"] == "s2"
        assert (await app.client.delete(f"/v1/templates/{t['id']}")).status_code == 204
        assert (await app.client.get("/v1/templates/b")).status_code == 404


async def test_raw_mime_round_trip(database_url: str) -> None:
    raw = (
        b"From: Shop <shop@example.com>\nTo: ann@example.com\nSubject: raw one\n"
        b"Content-Type: text/plain; charset=utf-8\n\nbuilt elsewhere\n"
    )
    with RecordingSmtpServer() as smtp:
        async with live_app(settings_for(database_url, smtp.url)) as app:
            r = await app.client.post(
                "/v1/messages/raw",
                json={
                    "from": "bounces@example.com",
                    "to": ["ann@example.com", "audit@example.com"],
                    "raw": base64.b64encode(raw).decode(),
                },
            )
            assert r.status_code == 202, r.text
            mid = r.json()["id"]
            await _delivered(app, mid, "audit@example.com")
            stored = (await app.client.get(f"/v1/messages/{mid}/raw")).content
            bad = await app.client.post(
                "/v1/messages/raw",
                json={"from": "a@example.com", "to": ["b@example.com"], "raw": "bm90IG1haWw="},
            )
            assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "raw"
    got = smtp.handler.messages()[0]
    assert got.mail_from == "bounces@example.com"
    assert sorted(got.rcpt_tos) == ["ann@example.com", "audit@example.com"]
    assert got.data == stored
    assert stored.endswith(raw.replace(b"\n", b"\r\n"))
    assert stored.startswith(b"Message-ID: <msg.")


async def test_raw_send_honours_idempotency_keys(database_url: str) -> None:
    raw = b"From: a@example.com\nTo: b@example.com\nSubject: once\n\nonly once\n"
    body = {"from": "a@example.com", "to": ["b@example.com"], "raw": base64.b64encode(raw).decode()}
    with RecordingSmtpServer() as smtp:
        async with live_app(settings_for(database_url, smtp.url)) as app:
            first = await app.client.post(
                "/v1/messages/raw", json=body, headers={"Idempotency-Key": "raw-1"}
            )
            again = await app.client.post(
                "/v1/messages/raw", json=body, headers={"Idempotency-Key": "raw-1"}
            )
            assert first.status_code == again.status_code == 202, again.text
            assert again.json() == first.json()
            assert again.headers["idempotent-replayed"] == "true"
            other = {**body, "to": ["c@example.com"]}
            clash = await app.client.post(
                "/v1/messages/raw", json=other, headers={"Idempotency-Key": "raw-1"}
            )
            assert clash.status_code == 422, clash.text  # same key, different request
            await _delivered(app, first.json()["id"], "b@example.com")
            listed = (await app.client.get("/v1/messages")).json()["data"]
    assert [m["id"] for m in listed] == [first.json()["id"]]
    assert smtp.handler.counts() == {"b@example.com": 1}


async def test_suppression_automatic_and_manual(database_url: str) -> None:
    handler = RecordingHandler(
        rcpt_reply=lambda r: "550 5.1.1 No such user" if r.lower().startswith("gone") else "250 OK"
    )
    with RecordingSmtpServer(handler) as smtp:
        async with live_app(settings_for(database_url, smtp.url)) as app:
            first = (await app.send(**msg("Gone@example.com"))).json()["id"]
            await _delivered(app, first, "Gone@example.com")
            sup = (await app.client.get("/v1/suppressions", params={"reason": "bounce"})).json()
            assert [s["email"] for s in sup["data"]] == ["gone@example.com"]
            assert sup["data"][0]["source_message_id"] == first

            add = await app.client.post(
                "/v1/suppressions", json={"email": "Manual@Example.com", "reason": "manual"}
            )
            assert add.status_code == 201 and add.json()["email"] == "manual@example.com"
            bad = await app.client.post("/v1/suppressions", json={"email": "nope"})
            assert bad.status_code == 422

            tries = len(smtp.handler.messages())
            r = await app.send(
                **msg("gone@example.com", cc=["manual@example.com", "ok@example.com"])
            )
            assert r.status_code == 202
            states = {x["email"]: x["status"] for x in r.json()["recipients"]}
            assert states["gone@example.com"] == "suppressed"
            assert states["manual@example.com"] == "suppressed"
            mid = r.json()["id"]
            await _delivered(app, mid, "ok@example.com")
            m = await app.get(mid)
            other = {"Authorization": f"Bearer {await make_key(database_url, tenant='other')}"}
            assert (await app.client.get("/v1/suppressions", headers=other)).json()["data"] == []
            d = await app.client.delete("/v1/suppressions/manual@example.com")
            assert d.status_code == 204
            again = await app.send(**msg("manual@example.com"))
            await _delivered(app, again.json()["id"], "manual@example.com")
    sent = [x for m2 in smtp.handler.messages()[tries:] for x in m2.rcpt_tos]
    assert sorted(sent) == ["manual@example.com", "ok@example.com"]
    types = sorted(e["type"] for e in m["events"])
    assert types == ["message.queued", "message.sent", "message.suppressed", "message.suppressed"]


async def test_search_and_events_feed(database_url: str) -> None:
    async with live_app(settings_for(database_url), run_workers=False) as app:
        a = await app.send(**msg("a@example.com", tags=["receipt"], metadata={"order": "1"}))
        b = await app.send(**msg("b@example.com", tags=["otp"], metadata={"order": "2"}))
        aid, bid = a.json()["id"], b.json()["id"]

        async def ids(**params: Any) -> list[str]:
            r = await app.client.get("/v1/messages", params=params)
            assert r.status_code == 200, r.text
            return [m["id"] for m in r.json()["data"]]

        assert await ids(tag="receipt") == [aid]
        assert await ids(**{"metadata[order]": "2"}) == [bid]
        assert await ids(**{"meta.order": "1"}) == [aid]
        assert await ids(recipient="B@example.com") == [bid]
        assert await ids(status="queued") == [bid, aid]
        assert await ids(created_after="2999-01-01T00:00:00Z") == []
        assert await ids(created_before="2999-01-01T00:00:00Z", tag="otp") == [bid]

        page = (await app.client.get("/v1/events", params={"after": 0, "limit": 1})).json()
        assert [e["message_id"] for e in page["data"]] == [aid]
        page2 = (await app.client.get("/v1/events", params={"after": page["next_cursor"]})).json()
        assert [e["message_id"] for e in page2["data"]] == [bid]
        none = (await app.client.get("/v1/events", params={"type": "message.sent"})).json()
        assert none["data"] == []
        other = {"Authorization": f"Bearer {await make_key(database_url, tenant='other')}"}
        assert (await app.client.get("/v1/events", headers=other)).json()["data"] == []
        assert (await app.client.get("/v1/messages", headers=other)).json()["data"] == []
