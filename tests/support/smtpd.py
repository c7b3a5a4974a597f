"""A real aiosmtpd server on loopback whose answers are chosen per recipient.

Used where a test needs "an SMTP server that behaves like this" without scripting every
phase: RCPT replies come from ``rcpt_reply`` (e.g. 250, 451 then 250, 550 5.1.1), and
``drop_next`` makes the server close the connection at DATA.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import Envelope, Session

from tests.support.ports import free_port


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes

    @property
    def message(self) -> Message:
        return message_from_bytes(self.data)

    @property
    def message_id(self) -> str:
        return str(self.message["Message-ID"])


@dataclass
class RecordingHandler:
    rcpt_reply: Callable[[str], str] = lambda rcpt: "250 2.1.5 OK"
    drop_at_data: int = 0  # drop the connection at the next N DATA commands
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_RCPT(
        self, server: Any, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        reply = self.rcpt_reply(address)
        if reply.startswith("2"):
            envelope.rcpt_tos.append(address)
        return reply

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        with self.lock:
            if self.drop_at_data > 0:
                self.drop_at_data -= 1
                server.transport.close()
                return "421 dropped"
            self.received.append(
                Received(
                    str(envelope.mail_from),
                    list(envelope.rcpt_tos),
                    envelope.original_content or b"",
                )
            )
        return "250 2.0.0 Queued"

    def counts(self) -> Counter[str]:
        with self.lock:
            return Counter(r for m in self.received for r in m.rcpt_tos)

    def messages(self) -> list[Received]:
        with self.lock:
            return list(self.received)


class RecordingSmtpServer:
    """Context manager: ``with RecordingSmtpServer() as s: s.port, s.handler.received``."""

    def __init__(self, handler: RecordingHandler | None = None, port: int | None = None) -> None:
        self.handler = handler or RecordingHandler()
        self.port = port or free_port()
        self._controller: Controller | None = None

    def start(self) -> RecordingSmtpServer:
        self._controller = Controller(
            self.handler,
            hostname="127.0.0.1",
            port=self.port,
            decode_data=False,
            server_hostname="sink.test",
            ready_timeout=10,
        )
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __enter__(self) -> RecordingSmtpServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}?tls=none"
