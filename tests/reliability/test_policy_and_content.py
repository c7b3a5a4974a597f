"""Group B, continued: TLS policy (B9), expiry (B10) and content fidelity (B11), end to end."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import time
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import pytest
from sqlalchemy import update

from service.db.engine import Database
from service.db.tables import recipients
from tests.reliability.harness import no_tracebacks, serve, wait_until
from tests.reliability.invariants import check_db
from tests.support.smtp_script import Script, ScriptedSmtpServer
from tests.support.tls_certs import loopback_tls, untrusted_tls, wrong_host_tls

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("fault", ["no_starttls", "untrusted_ca", "wrong_host", "good"])
def test_b9_tls_required_with_credentials(sqlite_url: str, tmp_path: Path, fault: str) -> None:
    material = {
        "no_starttls": None,
        "untrusted_ca": untrusted_tls(),
        "wrong_host": wrong_host_tls(),
        "good": loopback_tls(),
    }[fault]
    server = ScriptedSmtpServer(
        Script(auth=True, credentials=("user", "s3cret-canary")),
        tls_context=material.server_context() if material else None,
    )
    ca = loopback_tls().write_ca_bundle(tmp_path / "ca.pem")
    with server.in_thread():
        url = f"smtp://user:s3cret-canary@127.0.0.1:{server.port}?tls=starttls"
        with serve(sqlite_url, url, tmp_path, extra_env={"SSL_CERT_FILE": str(ca)}) as (_, api):
            mid = api.send(["b9@example.com"])["id"]
            if fault == "good":
                api.wait_all(mid, "sent")
            else:
                wait_until(lambda: len(api.get(mid)["attempts"]) >= 2, what="two attempts")
            msg = api.get(mid)
        connections = server.connections
    if fault == "good":
        assert all(c.tls and c.authenticated_as == "user" for c in connections)
        assert len(server.messages) == 1
    else:
        assert connections, "the client never connected"
        for conn in connections:
            assert not conn.saw("AUTH"), conn.text()
            assert not conn.saw("MAIL"), conn.text()
            assert "s3cret" not in conn.text()
        assert server.messages == []
        rec = msg["recipients"][0]
        assert rec["status"] in {"deferred", "sending"}
        assert all(a["outcome"] == "temporary" for a in msg["attempts"])
        assert all(a["stage"] in {"tls", "helo"} for a in msg["attempts"]), msg["attempts"]
        reason = (msg["attempts"][0]["reply"] or "").lower()
        assert "tls" in reason or "certificate" in reason, reason
    log = (tmp_path / "serve.log").read_text()
    assert "s3cret-canary" not in log
    no_tracebacks(tmp_path)


def _always_451(_r: str) -> str:
    return "451 4.3.0 Mailbox busy"


def test_b10_queue_lifetime_expiry(
    database_url: str, smtp: ScriptedSmtpServer, tmp_path: Path
) -> None:
    smtp.script = Script(rcpt=_always_451)
    with serve(database_url, smtp.url(), tmp_path, queue_lifetime=2.0) as (_, api):
        # The delivery child may still be starting; a lifetime that ends before the first try
        # is a correct verdict but not the one under test, so wait until a try has been made.
        warm = api.send(["b10-warm@example.com"])["id"]
        wait_until(lambda: len(api.get(warm)["attempts"]) >= 1, what="the worker's first try")
        mid = api.send(["b10@example.com"])["id"]
        msg = api.wait_all(mid, "failed")
        api.wait_all(warm, "failed")  # accepted first, so it has expired too: no more tries
        tries, conns = len(msg["attempts"]), len(smtp.connections)
        time.sleep(1.0)
        after = api.get(mid)
    assert tries >= 1 and len(after["attempts"]) == tries  # no attempt after the verdict
    assert len(smtp.connections) == conns
    rec = after["recipients"][0]
    assert rec["reason"] == "expired"
    assert [e["type"] for e in after["events"]].count("message.failed") == 1
    check_db(database_url, smtp.messages)


def test_b10_message_deadline_expiry(
    database_url: str, smtp: ScriptedSmtpServer, tmp_path: Path
) -> None:
    """A row's own deadline (from ``expires_at``) ends it long before the queue lifetime."""
    smtp.script = Script(rcpt=_always_451)
    with serve(database_url, smtp.url(), tmp_path) as (_, api):
        mid = api.send(["b10d@example.com"])["id"]
        wait_until(lambda: len(api.get(mid)["attempts"]) >= 1, what="a first attempt")
        asyncio.run(_set_deadline(database_url, mid, time.time() + 0.5))
        after = api.wait_all(mid, "failed")
    assert after["recipients"][0]["reason"] == "expired"
    assert [e["type"] for e in after["events"]].count("message.failed") == 1
    check_db(database_url, smtp.messages)


async def _set_deadline(database_url: str, message_id: str, deadline: float) -> None:
    db = Database(database_url)
    try:
        async with db.write() as conn:
            await conn.execute(
                update(recipients)
                .where(recipients.c.message_id == message_id)
                .values(deadline=deadline)
            )
    finally:
        await db.dispose()


def test_b11_content_fidelity(sqlite_url: str, smtp: ScriptedSmtpServer, tmp_path: Path) -> None:
    text = "\n".join(
        [".", "..", ".x", "..leading", "y" * 5000, "Grüße aus Köln — ✓ 8-bit", ".", "end"]
    )
    html = "<p>.</p>\n<p>" + "z" * 3000 + "</p>\n<p>é</p>"
    blob = os.urandom(20_000) + b"\r\n.\r\n" + b"\x00\xff" * 100
    attachment = {
        "filename": "data.bin",
        "content": base64.b64encode(blob).decode(),
        "content_type": "application/octet-stream",
    }
    with serve(sqlite_url, smtp.url(), tmp_path) as (_, api):
        sent = api.send(
            ["b11@example.com"],
            subject="Fidelity ✓",
            text=text,
            html=html,
            attachments=[attachment],
        )
        api.wait_all(sent["id"], "sent")
    (delivery,) = smtp.messages
    assert all(len(line) <= 998 for line in delivery.data.split(b"\r\n"))
    parsed = message_from_bytes(delivery.data, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    assert parsed["Subject"] == "Fidelity ✓"
    body = parsed.get_body(("plain",))
    assert body is not None and _lines(body.get_content()) == _lines(text)
    html_part = parsed.get_body(("html",))
    assert html_part is not None and _lines(html_part.get_content()) == _lines(html)
    (att,) = list(parsed.iter_attachments())
    payload = att.get_payload(decode=True)
    assert isinstance(payload, bytes)
    assert hashlib.sha256(payload).digest() == hashlib.sha256(blob).digest()
    check_db(sqlite_url, smtp.messages)


def _lines(s: str) -> list[str]:
    return s.replace("\r\n", "\n").rstrip("\n").split("\n")
