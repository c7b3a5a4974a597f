"""A genuine DSN from a private Postfix: a remote MX refuses the recipient with 550 5.1.1,
Postfix bounces to our signed return path, and the bounce is parsed and matched."""

from __future__ import annotations

import os
import time
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
import pytest

from service.bounces import ReportKind, make_return_path, parse_report, parse_return_path
from service.bounces.classify import BounceCategory
from tests.bounces.capture import CaptureHandler, start_capture
from tests.bounces.conftest import BASE, FIXTURES, MESSAGE_ID, RECIPIENT_ID, SECRET
from tests.bounces.servers import free_port, start_postfix, stop_postfix

pytestmark = pytest.mark.slow

MISSING = "nosuchuser@remote.kirim.test"


async def test_postfix_generates_dsn_we_parse_and_match() -> None:
    handler = CaptureHandler(
        refuse={MISSING: f"550 5.1.1 <{MISSING}>: Recipient address rejected: User unknown"}
    )
    capture_port = free_port()
    controller = start_capture(handler, capture_port)
    postfix = start_postfix(capture_port)
    return_path = make_return_path(BASE, MESSAGE_ID, RECIPIENT_ID, SECRET)
    original_id = f"<{MESSAGE_ID}@mail.example.com>"
    try:
        message = EmailMessage()
        message["From"] = "Shop <orders@example.com>"
        message["To"] = MISSING
        message["Subject"] = "Your order"
        message["Message-ID"] = original_id
        message.set_content("Thanks for your order.\n")
        await aiosmtplib.send(
            message,
            hostname="127.0.0.1",
            port=postfix.smtp_port,
            sender=return_path,
            recipients=[MISSING],
            timeout=10,
        )
        deadline = time.monotonic() + 60
        dsn = None
        while dsn is None and time.monotonic() < deadline:
            dsn = next((m for m in handler.messages if return_path in m.rcpt_tos), None)
            if dsn is None:
                handler.arrived.wait(0.2)
                handler.arrived.clear()
        assert dsn is not None, "no DSN arrived; postfix log:\n" + postfix.log()[-3000:]
    finally:
        stop_postfix(postfix)
        controller.stop()

    assert dsn.mail_from in ("", "<>")  # bounces use the null sender (RFC 5321 §4.5.5)
    if os.environ.get("KIRIM_SAVE_POSTFIX_DSN"):
        (FIXTURES / "postfix_dsn.eml").write_bytes(dsn.data)

    report = parse_report(dsn.data)
    assert report.kind is ReportKind.BOUNCE
    assert report.format == "dsn"
    assert report.report_message_id and "relay.kirim.test" in report.report_message_id
    assert report.original_message_id == original_id
    [entry] = report.recipients
    assert entry.address == MISSING
    assert entry.action == "failed"
    assert entry.status == "5.1.1"
    assert entry.category is BounceCategory.MAILBOX_UNKNOWN
    assert entry.diagnostic and "User unknown" in entry.diagnostic
    assert entry.remote_mta == "127.0.0.1"
    assert report.reporting_mta == "relay.kirim.test"
    tokens = [parse_return_path(a, BASE, SECRET) for a in report.envelope_addresses]
    assert (MESSAGE_ID, RECIPIENT_ID) in tokens


def test_saved_postfix_dsn_fixture_still_parses() -> None:
    """The fixture was written by this machine's Postfix 3.7 via the test above."""
    raw = Path(FIXTURES / "postfix_dsn.eml").read_bytes()
    assert b"Reporting-MTA: dns; relay.kirim.test" in raw
    report = parse_report(raw)
    assert report.kind is ReportKind.BOUNCE
    assert [(r.address, r.status) for r in report.recipients] == [(MISSING, "5.1.1")]
    assert report.original_message_id == f"<{MESSAGE_ID}@mail.example.com>"
    assert any(parse_return_path(a, BASE, SECRET) for a in report.envelope_addresses)
