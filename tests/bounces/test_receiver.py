"""The inbound SMTP receiver on loopback, driven by a real SMTP client."""

from __future__ import annotations

import aiosmtplib
import pytest

from service.bounces.pipeline import BounceProcessor, Decision
from service.bounces.receiver import serve_receiver
from service.bounces.return_path import make_return_path
from tests.bounces.conftest import BASE, MESSAGE_ID, RECIPIENT_ID, SECRET, fixture_bytes
from tests.bounces.servers import free_port


async def _send_bounce(port: int, raw: bytes, recipient: str) -> aiosmtplib.SMTPResponse:
    """Send like an MTA returning a bounce: with the null reverse-path."""
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=10) as client:
        await client.mail("")
        await client.rcpt(recipient)
        return await client.data(raw)


async def _serve(on_report, port: int):  # type: ignore[no-untyped-def]
    return await serve_receiver(
        on_report, host="127.0.0.1", port=port, accept_domains=["mail.example.com"]
    )


async def test_accepts_and_hands_over_report() -> None:
    applied = []

    async def apply(report, matches):  # type: ignore[no-untyped-def]
        applied.append((report.report_message_id, tuple(matches)))

    processor = BounceProcessor(apply=apply, base=BASE, secrets=[SECRET])

    async def on_report(raw: bytes, rcpt_tos: list[str]) -> bool:
        outcome = await processor.process(raw, envelope_rcpts=rcpt_tos)
        return outcome.decision is Decision.DONE

    port = free_port()
    server = await _serve(on_report, port)
    try:
        rcpt = make_return_path(BASE, MESSAGE_ID, RECIPIENT_ID, SECRET)
        reply = await _send_bounce(port, fixture_bytes("postfix_dsn.eml"), rcpt)
        assert reply.code == 250 and reply.message.startswith("2.0.0")
    finally:
        server.close()
        await server.wait_closed()
    assert processor.counts == {"done": 1}
    [(report_id, matches)] = applied
    assert report_id == "<20261128013715.C75CA20C512@relay.kirim.test>"
    assert [(m.message_id, m.recipient_id) for m in matches] == [(MESSAGE_ID, RECIPIENT_ID)]


@pytest.mark.parametrize("behaviour", ["false", "raise"])
async def test_failure_answers_451_so_the_sender_retries(behaviour: str) -> None:
    calls: list[list[str]] = []

    async def on_report(raw: bytes, rcpt_tos: list[str]) -> bool:
        calls.append(rcpt_tos)
        if behaviour == "raise":
            raise RuntimeError("database unavailable")
        return False

    port = free_port()
    server = await _serve(on_report, port)
    try:
        with pytest.raises(aiosmtplib.SMTPDataError) as info:
            await _send_bounce(port, fixture_bytes("qmail.eml"), "bounces@mail.example.com")
        assert info.value.code == 451
    finally:
        server.close()
        await server.wait_closed()
    assert calls == [["bounces@mail.example.com"]]


async def test_refuses_other_domains() -> None:
    async def on_report(raw: bytes, rcpt_tos: list[str]) -> bool:
        raise AssertionError("must not be called")

    port = free_port()
    server = await _serve(on_report, port)
    try:
        with pytest.raises(aiosmtplib.SMTPRecipientRefused) as info:
            await _send_bounce(port, b"Subject: x\r\n\r\nbody\r\n", "someone@elsewhere.example")
        assert info.value.code == 550
    finally:
        server.close()
        await server.wait_closed()
