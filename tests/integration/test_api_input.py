"""Bad input gets a clear 4xx naming the field, stores nothing, and sends nothing."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from service.db.engine import Database
from tests.support.app import live_app, settings_for, wait_for
from tests.support.smtpd import RecordingSmtpServer

pytestmark = pytest.mark.asyncio

GOOD: dict[str, Any] = {
    "from": "a@example.com",
    "to": ["b@example.com"],
    "subject": "s",
    "text": "t",
}

BAD_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("crlf-subject", {"subject": "Hi\r\nBcc: evil@example.com"}, "subject"),
    ("lf-subject", {"subject": "Hi\nthere"}, "subject"),
    ("nul-subject", {"subject": "Hi\x00"}, "subject"),
    ("u2028-subject", {"subject": "Hi\u2028there"}, "subject"),
    ("crlf-header", {"headers": {"X-Ok": "v\r\nBcc: evil@example.com"}}, "headers.X-Ok"),
    ("encoded-newline", {"subject": "=?UTF-8?Q?=0A?=Bcc: x@evil.example"}, "subject"),
    ("encoded-newline-header", {"headers": {"X-Tag": "=?UTF-8?B?Cg==?=x"}}, "headers.X-Tag"),
    ("forbidden-header", {"headers": {"Bcc": "x@evil.example"}}, "headers.Bcc"),
    ("content-type-header", {"headers": {"Content-Type": "text/html"}}, "headers.Content-Type"),
    ("bad-header-name", {"headers": {"X Bad": "v"}}, "headers.X Bad"),
    ("malformed-to", {"to": ["not-an-address"]}, "to.0"),
    ("double-dot", {"to": ["a..b@example.com"]}, "to.0"),
    ("smuggled-rcpt", {"to": ["a@b.com>\r\nRCPT TO:<x@evil.example>"]}, "to.0"),
    ("smuggled-param", {"to": ["a@b.com> NOTIFY=SUCCESS"]}, "to.0"),
    ("bad-from", {"from": "nobody"}, "from"),
    ("no-recipient", {"to": []}, "to"),
    ("no-body", {"text": None}, "text"),
    (
        "bad-base64",
        {"attachments": [{"filename": "a.bin", "content": "%%%notbase64"}]},
        "attachments.0.content",
    ),
    (
        "bad-padding",
        {"attachments": [{"filename": "a.bin", "content": "YWJj="}]},
        "attachments.0.content",
    ),
    (
        "crlf-filename",
        {"attachments": [{"filename": "a\r\n.txt", "content": "YWJj"}]},
        "attachments.0.filename",
    ),
    (
        "slash-filename",
        {"attachments": [{"filename": "../etc/passwd", "content": "YWJj"}]},
        "attachments.0.filename",
    ),
    (
        "ctype-params",
        {
            "attachments": [
                {"filename": "a", "content": "YWJj", "content_type": 'text/plain; x="y"'}
            ]
        },
        "attachments.0.content_type",
    ),
    ("unknown-field", {"bogus": 1}, "bogus"),
    ("too-many-recipients", {"to": [f"u{i}@example.com" for i in range(51)]}, "to"),
]


async def _count_rows(url: str) -> int:
    from sqlalchemy import func, select

    from service.db.tables import events, messages, recipients

    db = Database(url)
    try:
        async with db.read() as conn:
            total = 0
            for t in (messages, recipients, events):
                total += (await conn.execute(select(func.count()).select_from(t))).scalar_one()
            return total
    finally:
        await db.dispose()


async def test_bad_input_is_refused_and_changes_nothing(database_url: str) -> None:
    with RecordingSmtpServer() as smtp:
        async with live_app(settings_for(database_url, smtp.url)) as app:
            for name, patch, field in BAD_CASES:
                body = {**GOOD, **patch}
                r = await app.client.post("/v1/messages", json=body)
                assert r.status_code == 422, (name, r.status_code, r.text)
                assert r.headers["content-type"].startswith("application/problem+json")
                problem = r.json()
                fields = [e["field"] for e in problem["errors"]]
                assert field in fields, (name, fields)
                assert problem["status"] == 422 and problem["type"].endswith("validation-error")
            assert await _count_rows(database_url) == 0
            # Valid traffic beside it is unaffected.
            ok = await app.client.post("/v1/messages", json=GOOD)
            assert ok.status_code == 202
            mid = ok.json()["id"]

            async def sent() -> bool:
                return (await app.get(mid))["status"] == "sent"

            await wait_for(sent)
            await asyncio.sleep(0.2)
    got = smtp.handler.messages()
    assert len(got) == 1 and got[0].rcpt_tos == ["b@example.com"]
    assert b"evil" not in got[0].data


async def test_malformed_json_and_oversize_body(database_url: str) -> None:
    settings = settings_for(database_url, max_body_bytes=64 * 1024)
    async with live_app(settings, run_workers=False) as app:
        r = await app.client.post(
            "/v1/messages", content=b"{not json", headers={"content-type": "application/json"}
        )
        assert r.status_code == 400 and r.json()["type"].endswith("malformed-json")
        big = {**GOOD, "text": "x" * (70 * 1024)}
        r = await app.client.post("/v1/messages", json=big)
        assert r.status_code == 413
        assert r.headers["content-type"].startswith("application/problem+json")

        # Without Content-Length (chunked, never finished), the cap applies while streaming.
        host, port = app.base_url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {app.key}\r\n".encode()
            + b"Transfer-Encoding: chunked\r\n\r\n"
        )
        for _ in range(70):
            writer.write(b"400\r\n" + b"x" * 1024 + b"\r\n")
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), 10)
        assert status_line.split()[1] == b"413", status_line
        writer.close()
        # The server stays responsive.
        assert (await app.client.get("/healthz")).status_code == 200
    assert await _count_rows(database_url) == 0


async def test_auth_errors(database_url: str) -> None:
    async with live_app(settings_for(database_url), run_workers=False) as app:
        async with httpx.AsyncClient(base_url=app.base_url, trust_env=False) as anon:
            r = await anon.post("/v1/messages", json=GOOD)
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
            r = await anon.get("/v1/messages", headers={"Authorization": "Bearer kirim_nope"})
            assert r.status_code == 401
        r = await app.client.get("/v1/messages/msg_01JD0000000000000000000000")
        assert r.status_code == 404 and r.json()["type"].endswith("not-found")
        r = await app.client.get("/v1/messages/whatever")
        assert r.status_code == 404
    assert await _count_rows(database_url) == 0


async def test_list_newest_first_with_cursor(database_url: str) -> None:
    async with live_app(settings_for(database_url), run_workers=False) as app:
        ids = []
        for i in range(5):
            r = await app.client.post("/v1/messages", json={**GOOD, "subject": f"n{i}"})
            ids.append(r.json()["id"])
        page1 = (await app.client.get("/v1/messages", params={"limit": 2})).json()
        assert [m["id"] for m in page1["data"]] == ids[::-1][:2]
        page2 = (
            await app.client.get(
                "/v1/messages", params={"limit": 2, "cursor": page1["next_cursor"]}
            )
        ).json()
        assert [m["id"] for m in page2["data"]] == ids[::-1][2:4]
        page3 = (
            await app.client.get(
                "/v1/messages", params={"limit": 2, "cursor": page2["next_cursor"]}
            )
        ).json()
        assert [m["id"] for m in page3["data"]] == ids[:1]
        assert page3["next_cursor"] is None
        filtered = (await app.client.get("/v1/messages", params={"status": "sent"})).json()
        assert filtered["data"] == []
        r = await app.client.get("/v1/messages", params={"cursor": "bogus"})
        assert r.status_code == 400


async def test_health_and_readiness(database_url: str) -> None:
    async with live_app(settings_for(database_url), run_workers=False) as app:
        assert (await app.client.get("/healthz")).json() == {"status": "ok", "database": None}
        r = await app.client.get("/readyz")
        assert r.status_code == 200 and r.json()["database"] == "ok"
