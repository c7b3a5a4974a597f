"""A loopback SMTP sink that refuses chosen recipients (as a remote MX would)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session


@dataclass
class Captured:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes


@dataclass
class CaptureHandler:
    refuse: dict[str, str] = field(default_factory=dict)  # address -> SMTP reply
    messages: list[Captured] = field(default_factory=list)
    arrived: threading.Event = field(default_factory=threading.Event)

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        reply = self.refuse.get(address.lower())
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        data = envelope.original_content or b""
        self.messages.append(Captured(str(envelope.mail_from), list(envelope.rcpt_tos), data))
        self.arrived.set()
        return "250 2.0.0 OK"


def start_capture(handler: CaptureHandler, port: int) -> Controller:
    controller = Controller(handler, hostname="127.0.0.1", port=port, decode_data=False)
    controller.start()
    return controller
