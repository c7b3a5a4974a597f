"""Shared values for the SMTP transport tests."""

from __future__ import annotations

from collections.abc import Callable

from service.delivery.smtp import SmtpTransport
from service.delivery.smtp_url import SmtpTimeouts
from tests.support.ports import free_port as free_port

# The RFC 5321 defaults scaled down 100x: the suite runs in seconds, ratios stay the same.
FAST = SmtpTimeouts().scaled(0.01)

MakeTransport = Callable[..., SmtpTransport]


def message(message_id: str = "<m1@test.kirim>", body: bytes = b"Hello.\r\n") -> bytes:
    return (
        b"From: sender@test.kirim\r\nTo: rcpt@test.kirim\r\nSubject: test\r\n"
        b"Message-ID: " + message_id.encode() + b"\r\n\r\n" + body
    )
