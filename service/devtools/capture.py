"""A capture SMTP server for `kirim dev`: keeps every message in a Maildir, logs one line."""

from __future__ import annotations

import logging
import mailbox
from email.parser import BytesHeaderParser
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import Envelope, Session

log = logging.getLogger("kirim.capture")


class MaildirHandler:
    def __init__(self, path: Path) -> None:
        self.maildir = mailbox.Maildir(path, create=True)

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        key = self.maildir.add(raw)
        headers = BytesHeaderParser().parsebytes(raw)
        log.info(
            "captured %s from=%s to=%s subject=%r file=%s",
            headers.get("Message-ID", "?"),
            envelope.mail_from,
            ",".join(envelope.rcpt_tos),
            headers.get("Subject", ""),
            key,
        )
        return "250 2.0.0 Captured"


def start_capture(path: Path, host: str = "127.0.0.1", port: int = 2525) -> Controller:
    """Start the server in a background thread; call ``.stop()`` to end it."""
    controller = Controller(
        MaildirHandler(path), hostname=host, port=port, decode_data=False, server_hostname="capture"
    )
    controller.start()
    return controller
