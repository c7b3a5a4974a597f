"""The command channel of an open SMTP session: write commands, read replies in order.

aiosmtplib sets the session up (greeting, EHLO, STARTTLS, AUTH); the transactions then run
on this protocol, which takes over the same transport. It exists for two reasons: it keeps
every reply that arrives, so commands can be pipelined (RFC 2920) — aiosmtplib drops data
that arrives while no command is waiting and parses only one reply per read — and a reply
costs one future and one timer instead of a lock, a regex and ``asyncio.wait_for``.

Replies go to their readers in the order the readers asked, so a transaction can start on
a session while the one before it still waits for the reply to its final dot (its reader
asked first, so it gets the first reply). A write may be gathered (``gather=True``): it
leaves at the end of the loop's current step, together with whatever else is written to
the session in that step, in one segment.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import cast

MAX_LINE = 8192
MAX_BUFFER = 4 * MAX_LINE


class WireError(Exception):
    """The channel cannot give the next reply."""


class WireLost(WireError):
    """The connection closed (or was reset) before the reply."""


class WireTimeout(WireError):
    """No complete reply, or the peer stopped reading, within the time allowed."""


class WireGarbage(WireError):
    """The peer sent something that is not an SMTP reply."""


class Wire(asyncio.Protocol):
    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport: asyncio.Transport | None = transport
        self._loop = asyncio.get_running_loop()
        self._buffer = bytearray()
        self._replies: deque[tuple[int, str]] = deque()
        self._failure: WireError | None = None
        self._readers: deque[asyncio.Future[tuple[int, str]]] = deque()
        self._writable: asyncio.Future[None] | None = None
        self._gathered: list[bytes] = []

    @classmethod
    def adopt(cls, transport: asyncio.BaseTransport) -> Wire:
        """Take over ``transport`` (whose previous protocol has read every reply it expected)."""
        wire = cls(cast(asyncio.Transport, transport))  # asyncio's, uvloop's or a TLS one
        transport.set_protocol(wire)
        return wire

    @property
    def connected(self) -> bool:
        return (
            self._failure is None
            and self._transport is not None
            and not self._transport.is_closing()
        )

    def write(self, data: bytes, *, gather: bool = False) -> None:
        if not self.connected:
            raise self._error()
        if self._gathered:
            self._gathered.append(data)
        elif gather:
            self._gathered.append(data)
            self._loop.call_soon(self.flush)
        else:
            assert self._transport is not None
            self._transport.write(data)

    def flush(self) -> None:
        """Write what was gathered (it leaves by itself at the end of the loop's step)."""
        if not self._gathered:
            return
        data = b"".join(self._gathered)
        self._gathered.clear()
        if self.connected:
            assert self._transport is not None
            self._transport.write(data)

    async def reply(self, limit: float) -> tuple[int, str]:
        """The next reply: its code and its text (lines joined by newlines)."""
        if not self._readers:
            if self._replies:
                return self._replies.popleft()
            if self._failure is not None:
                raise self._failure
        reader: asyncio.Future[tuple[int, str]] = self._loop.create_future()
        self._readers.append(reader)
        timer = self._loop.call_later(limit, self._expire, reader, limit)
        try:
            return await reader
        finally:
            timer.cancel()
            if reader in self._readers:  # timed out or cancelled before its reply
                self._readers.remove(reader)

    async def drain(self, limit: float) -> None:
        """Wait until the transport's write buffer is below its high-water mark."""
        self.flush()
        writable = self._writable
        if writable is None:
            if self._failure is not None:
                raise self._failure
            return
        try:
            await asyncio.wait_for(asyncio.shield(writable), limit)
        except TimeoutError:
            raise WireTimeout(f"peer stopped reading for {limit:g}s") from None
        if self._failure is not None:
            raise self._failure

    def _error(self) -> WireError:
        # A method, not an expression at the raise: after an ``await`` the type checker
        # still takes ``_failure`` for the None it was before, and compiled code trusts it.
        return self._failure or WireLost("connection closed")

    def close(self) -> None:
        self.flush()  # what was written before the close still goes out
        if self._transport is not None:
            self._transport.close()
        self._fail(WireLost("connection closed"))

    # asyncio.Protocol

    def data_received(self, data: bytes) -> None:
        if self._failure is not None:
            return
        self._buffer += data
        try:
            self._parse()
        except WireGarbage as exc:
            self._fail(exc)
            if self._transport is not None:
                self._transport.close()
            return
        self._wake()

    def eof_received(self) -> bool:
        self._fail(WireLost("connection closed by the peer"))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(WireLost(f"connection lost: {exc}" if exc else "connection closed"))
        self._transport = None

    def pause_writing(self) -> None:
        if self._writable is None:
            self._writable = self._loop.create_future()

    def resume_writing(self) -> None:
        writable, self._writable = self._writable, None
        if writable is not None and not writable.done():
            writable.set_result(None)

    # internals

    def _parse(self) -> None:
        buffer = self._buffer
        while True:
            end = buffer.find(b"\n")
            if end < 0:
                if len(buffer) > MAX_BUFFER:
                    raise WireGarbage("reply line too long")
                return
            # A reply is complete at its first line without a hyphen after the code.
            offset = 0
            code = -1
            lines: list[str] = []
            while end >= 0:
                line = bytes(buffer[offset : end + 1])
                if len(line) > MAX_LINE:
                    raise WireGarbage("reply line too long")
                head = line[:3]
                if not head.isdigit():
                    text = line.decode("utf-8", "replace").strip()
                    raise WireGarbage(f"malformed reply line: {text}")
                code = int(head)
                lines.append(line[4:].strip(b" \t\r\n").decode("utf-8", "surrogateescape"))
                offset = end + 1
                if line[3:4] != b"-":
                    del buffer[:offset]
                    self._replies.append((code, "\n".join(lines)))
                    break
                end = buffer.find(b"\n", offset)
            else:
                if len(buffer) > MAX_BUFFER:
                    raise WireGarbage("reply too long")
                return

    def _wake(self) -> None:
        """Hand the replies to their readers in order; past the replies, the failure."""
        readers = self._readers
        while readers and self._replies:
            reader = readers.popleft()
            if not reader.done():
                reader.set_result(self._replies.popleft())
        failure = self._failure
        if failure is not None:
            while readers:
                reader = readers.popleft()
                if not reader.done():
                    reader.set_exception(failure)

    def _expire(self, reader: asyncio.Future[tuple[int, str]], limit: float) -> None:
        if not reader.done():
            reader.set_exception(WireTimeout(f"no reply within {limit:g}s"))

    def _fail(self, failure: WireError) -> None:
        if self._failure is None:
            self._failure = failure
        self._wake()
        self.resume_writing()  # a writer waiting to drain sees the failure
