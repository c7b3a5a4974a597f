"""Shared values for the SMTP transport tests."""

from __future__ import annotations

import socket
from collections.abc import Callable

from service.delivery.smtp import SmtpTransport
from service.delivery.smtp_url import SmtpTimeouts

# The RFC 5321 defaults scaled down 100x: the suite runs in seconds, ratios stay the same.
FAST = SmtpTimeouts().scaled(0.01)

MakeTransport = Callable[..., SmtpTransport]


def message(message_id: str = "<m1@test.kirim>", body: bytes = b"Hello.\r\n") -> bytes:
    return (
        b"From: sender@test.kirim\r\nTo: rcpt@test.kirim\r\nSubject: test\r\n"
        b"Message-ID: " + message_id.encode() + b"\r\n\r\n" + body
    )


def free_port() -> int:
    """A port nobody listens on (bound and released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
