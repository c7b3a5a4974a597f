"""Accept over HTTP, deliver to a real aiosmtpd server on loopback, read the status."""

from __future__ import annotations

import hashlib
from collections import Counter
from email import message_from_bytes, policy
from typing import Any

import pytest

from tests.support.app import live_app, settings_for, wait_for
from tests.support.smtpd import RecordingHandler, RecordingSmtpServer

pytestmark = pytest.mark.asyncio


def _statuses(msg: dict[str, Any]) -> dict[str, str]:
    return {r["email"]: r["status"] for r in msg["recipients"]}


async def test_send_and_status_sent(database_url: str) -> None:
    with RecordingSmtpServer() as smtp:
        async with live_app(settings_for(database_url, smtp.url)) as app:
            r = await app.send(
                **{"from": "Shop <shop@example.com>"},
                to=["ann@example.com"],
                subject="Your receipt",
                text="Thanks!",
                tags=["receipt"],
                metadata={"order": "42"},
            )
            assert r.status_code == 202, r.text
            body = r.json()
            assert body["status"] == "queued"
            mid = body["id"]

            async def sent() -> bool:
                return (await app.get(mid))["status"] == "sent"

            await wait_for(sent)
            msg = await app.get(mid)
    assert smtp.handler.counts() == Counter({"ann@example.com": 1})
    rec = msg["recipients"][0]
    # Once seen in CI under load (2 attempts, 1 delivery): show the attempts if it recurs.
    assert rec["status"] == "sent" and rec["attempts"] == 1, msg["attempts"]
    assert rec["last_reply"]["code"] == 250
    assert [a["outcome"] for a in msg["attempts"]] == ["accepted"]
    assert [e["type"] for e in msg["events"]] == ["message.queued", "message.sent"]
    assert [e["seq"] for e in msg["events"]] == [1, 2]
    assert msg["events"][1]["data"]["metadata"] == {"order": "42"}
    received = smtp.handler.messages()[0]
    assert received.message_id == msg["message_id"]


async def test_per_recipient_outcomes_and_retry(database_url: str) -> None:
    tries: Counter[str] = Counter()

    def reply(rcpt: str) -> str:
        tries[rcpt] += 1
        if rcpt.startswith("later"):
            return "451 4.3.0 Try later" if tries[rcpt] == 1 else "250 OK"
        if rcpt.startswith("gone"):
            return "550 5.1.1 No such user"
        return "250 OK"

    handler = RecordingHandler(rcpt_reply=reply)
    with RecordingSmtpServer(handler) as smtp:
        async with live_app(settings_for(database_url, smtp.url)) as app:
            r = await app.send(
                **{"from": "a@example.com"},
                to=["ok@example.com", "later@example.com", "gone@example.com"],
                subject="s",
                text="t",
            )
            mid = r.json()["id"]

            async def settled() -> bool:
                st = _statuses(await app.get(mid))
                return st == {
                    "ok@example.com": "sent",
                    "later@example.com": "sent",
                    "gone@example.com": "bounced",
                }

            await wait_for(settled)
            msg = await app.get(mid)
    # 550 is never retried; 451 is retried alone; the accepted one is never sent twice.
    assert tries["gone@example.com"] == 1
    assert tries["later@example.com"] == 2
    assert smtp.handler.counts() == Counter({"ok@example.com": 1, "later@example.com": 1})
    gone = next(r for r in msg["recipients"] if r["email"] == "gone@example.com")
    assert gone["last_reply"]["code"] == 550
    assert gone["last_reply"]["enhanced_code"] == "5.1.1"
    assert gone["reason"] == "smtp_permanent"
    later = [a for a in msg["attempts"] if a["recipient_id"] != gone["id"]]
    assert sorted(a["outcome"] for a in later) == ["accepted", "accepted", "temporary"]
    assert msg["status"] == "partially_sent"
    types = Counter(e["type"] for e in msg["events"])
    assert types == Counter(
        {"message.queued": 3, "message.sent": 2, "message.deferred": 1, "message.bounced": 1}
    )
    assert sorted(e["seq"] for e in msg["events"]) == list(range(1, 8))


async def test_drop_after_final_dot_is_retried_and_flagged(database_url: str) -> None:
    # aiosmtpd hands DATA to the handler after the final dot: a drop there is the RFC 1047
    # window, so the retry is flagged as a possible duplicate.
    handler = RecordingHandler(drop_at_data=1)
    with RecordingSmtpServer(handler) as smtp:
        async with live_app(settings_for(database_url, smtp.url)) as app:
            r = await app.send(
                **{"from": "a@example.com"}, to=["x@example.com"], subject="s", text="t"
            )
            mid = r.json()["id"]

            async def sent() -> bool:
                return (await app.get(mid))["status"] == "sent"

            await wait_for(sent)
            msg = await app.get(mid)
    assert smtp.handler.counts() == Counter({"x@example.com": 1})
    assert [a["outcome"] for a in msg["attempts"]] == ["unknown", "accepted"]
    assert [a["stage"] for a in msg["attempts"]] == ["dot", "dot"]
    assert msg["attempts"][0]["possible_duplicate"] is True
    assert msg["recipients"][0]["possible_duplicate"] is True


async def test_bytes_received_parse_back_to_the_same_content(database_url: str) -> None:
    import base64

    blob = bytes(range(256)) * 40
    text = "Dear Zoë,\n.\n..\n.hidden\n" + "long " * 1200 + "\nend\n"
    with RecordingSmtpServer() as smtp:
        async with live_app(settings_for(database_url, smtp.url)) as app:
            r = await app.send(
                **{"from": "Zoë Example <zoe@example.com>"},
                to=["Ann <ann@example.com>"],
                cc=["cc@example.com"],
                bcc=["hidden@example.com"],
                subject="Grüße — ünïcode ✓",
                text=text,
                html="<p>Hi <b>there</b></p>",
                headers={"X-Campaign": "welcome", "List-Unsubscribe": "<mailto:u@example.com>"},
                attachments=[
                    {"filename": "blob.bin", "content": base64.b64encode(blob).decode()},
                    {
                        "filename": "notes é.txt",
                        "content": base64.b64encode(b"hello").decode(),
                        "content_type": "text/plain",
                    },
                ],
            )
            assert r.status_code == 202, r.text
            mid = r.json()["id"]

            async def sent() -> bool:
                return (await app.get(mid))["status"] == "sent"

            await wait_for(sent)
            raw = await app.client.get(f"/v1/messages/{mid}/raw")
    got = smtp.handler.messages()
    assert len(got) == 1
    assert sorted(got[0].rcpt_tos) == ["ann@example.com", "cc@example.com", "hidden@example.com"]
    assert got[0].data.replace(b"\r\n", b"\n") == raw.content.replace(b"\r\n", b"\n")
    assert all(len(line) <= 998 for line in got[0].data.split(b"\r\n"))
    m = message_from_bytes(got[0].data, policy=policy.default)
    assert m["Subject"] == "Grüße — ünïcode ✓"
    assert "hidden@example.com" not in got[0].data.decode("ascii", "replace")
    assert m["X-Campaign"] == "welcome"
    body = m.get_body(preferencelist=("plain",))
    assert body is not None and body.get_content().replace("\r\n", "\n") == text
    html = m.get_body(preferencelist=("html",))
    assert html is not None and "<b>there</b>" in html.get_content()
    files = {p.get_filename(): p.get_content() for p in m.iter_attachments()}
    assert hashlib.sha256(files["blob.bin"]).digest() == hashlib.sha256(blob).digest()
    assert files["notes é.txt"].strip() == "hello"
