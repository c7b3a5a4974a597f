"""An SMTP server (PIPELINING) that holds its reply to each final dot for a while.

After a message's final dot it waits up to ``hold`` seconds for the next line before it
answers the dot, and records whether that line, the next transaction's MAIL, came first:
proof that the client wrote its next transaction without waiting for the dot's reply. A
client that waits instead costs ``hold`` seconds per message and records ``early=False``.

``dot(n)`` chooses the reply to the n-th message (counted from 0 over all connections):
bytes to answer, or None to close the connection without a reply (after the dot, and after
reading whatever the client wrote next). Runs in the test's event loop, loopback only.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Received:
    connection: int
    mail_from: bytes
    body: bytes
    early: bool  # the next transaction's MAIL arrived before the reply to this dot


def _accept(_: int) -> bytes | None:
    return b"250 2.0.0 queued\r\n"


@dataclass
class HoldingSmtpServer:
    hold: float = 2.0
    pipelining: bool = True
    dot: Callable[[int], bytes | None] = _accept
    received: list[Received] = field(default_factory=list)
    connections: int = 0
    _server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"smtp://127.0.0.1:{port}?tls=none"

    async def __aenter__(self) -> HoldingSmtpServer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        connection = self.connections
        extensions = b"250-PIPELINING\r\n" if self.pipelining else b""
        writer.write(b"220 hold.test ESMTP\r\n")
        line: bytes | None = None
        mail_from = b""
        try:
            while True:
                if line is None:
                    line = await reader.readline()
                if not line:
                    return
                verb = line[:4].upper()
                if verb in (b"EHLO", b"HELO"):
                    writer.write(b"250-hold.test\r\n" + extensions + b"250 8BITMIME\r\n")
                elif verb == b"QUIT":
                    writer.write(b"221 bye\r\n")
                    return
                elif verb == b"MAIL":
                    mail_from = line
                    writer.write(b"250 2.1.0 ok\r\n")
                elif verb == b"RCPT":
                    writer.write(b"250 2.1.5 ok\r\n")
                elif verb == b"DATA":
                    writer.write(b"354 go\r\n")
                    body = []
                    while (part := await reader.readline()) not in (b".\r\n", b""):
                        body.append(part)
                    line = await self._wait_for_next(reader)
                    number = len(self.received)
                    early = line is not None and line[:4].upper() == b"MAIL"
                    self.received.append(Received(connection, mail_from, b"".join(body), early))
                    reply = self.dot(number)
                    if reply is None:
                        return
                    writer.write(reply)
                    if reply.startswith(b"421"):
                        return
                    continue
                else:
                    writer.write(b"250 ok\r\n")
                line = None
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _wait_for_next(self, reader: asyncio.StreamReader) -> bytes | None:
        try:
            return await asyncio.wait_for(reader.readline(), self.hold)
        except TimeoutError:
            return None
