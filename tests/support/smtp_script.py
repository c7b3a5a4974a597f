"""A scriptable SMTP server for tests, written on raw asyncio streams.

Every phase answers what the ``Script`` says: a reply (one line or several), ``Drop()``
(close the connection instead of replying), or ``Stall(seconds, then)``; most rules may
also be callables, evaluated per command, so behaviour can depend on the recipient or
change while the server runs (assign to ``server.script`` or its fields at any time).

The server records a transcript per connection (AUTH lines kept raw, so a test can prove
that no credentials were sent) and every delivered message, thread-safely.

Use it as ``async with ScriptedSmtpServer(script) as server`` inside a test's event loop,
or ``with ScriptedSmtpServer(script).in_thread() as server`` for a subprocess under test.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import re
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

# --- what a phase can do ------------------------------------------------------------


@dataclass(frozen=True)
class Drop:
    """Close the connection instead of replying.

    ``keep`` matters after the final dot only: whether the server had already stored the
    message (the RFC 1047 window, where a client must assume it may have been delivered).
    ``reset`` sends a TCP RST instead of a clean FIN.
    """

    keep: bool = True
    reset: bool = False


@dataclass(frozen=True)
class Stall:
    """Wait ``seconds`` before acting; ``then`` is the action afterwards (default reply if None)."""

    seconds: float
    then: Action | None = None


@dataclass(frozen=True)
class DataFault:
    """During DATA: read ``after_bytes`` of the body, stop reading for ``stall`` seconds,
    then drop the connection (with a TCP reset, as a crashed server would)."""

    after_bytes: int = 0
    stall: float = 0.0


Action = str | Sequence[str] | Drop | Stall
Rule = Action | Callable[..., Action]


@dataclass
class Script:
    """The server's behaviour. Callables get: mail(sender), rcpt(recipient), dot(Delivery)."""

    hostname: str = "smtp.test"
    greeting: Rule = "220 smtp.test ESMTP ready"
    # EHLO extensions; STARTTLS is offered only if the server has a TLS context.
    starttls: bool = True
    auth: bool = False
    auth_requires_tls: bool = False
    credentials: tuple[str, str] | None = None  # None accepts any user and password
    auth_reply: Rule | None = None  # overrides the credentials check
    pipelining: bool = True
    smtputf8: bool = True
    eightbitmime: bool = True
    size: int | None = None  # advertised SIZE limit; None: not advertised
    ehlo: Rule | None = None  # replaces the generated EHLO reply entirely
    mail: Rule = "250 2.1.0 Ok"
    rcpt: Rule = "250 2.1.5 Ok"
    max_rcpt: int | None = None  # per transaction; further RCPTs get ``too_many``
    too_many: str = "452 4.5.3 Too many recipients"
    data: Rule = "354 End data with <CR><LF>.<CR><LF>"
    data_fault: DataFault | None = None
    dot: Rule = "250 2.0.0 Ok: queued"


# --- what the server records ------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    mail_from: str
    recipients: tuple[str, ...]
    data: bytes  # as received, dot-unstuffed, without the terminating dot
    message_id: str | None
    connection_id: int
    mail_params: tuple[str, ...]


@dataclass
class Connection:
    id: int
    tls: bool = False
    closed: bool = False
    authenticated_as: str | None = None
    lines: list[tuple[str, str]] = field(default_factory=list)  # ("C"|"S"|"*", text)

    def client_lines(self) -> list[str]:
        return [text for who, text in self.lines if who == "C"]

    def verbs(self) -> list[str]:
        return [line.split(" ", 1)[0].upper() for line in self.client_lines() if line]

    def saw(self, verb: str) -> bool:
        return verb.upper() in self.verbs()

    def text(self) -> str:
        return "\n".join(f"{who}: {line}" for who, line in self.lines)


class _Dropped(Exception):
    pass


_TERMINATOR = b"\r\n.\r\n"
_UNSTUFF = re.compile(rb"(?m)^\.")
_MESSAGE_ID = re.compile(rb"(?im)^message-id:[ \t]*(.*(?:\r?\n[ \t].*)*)")
_ADDRESS = re.compile(r"^(?:FROM|TO):\s*<([^>]*)>\s*(.*)$", re.IGNORECASE)


def _code_of(lines: Sequence[str]) -> int:
    last = lines[-1] if lines else ""
    return int(last[:3]) if last[:3].isdigit() else 0


def _final_action(action: Action) -> Action:
    while isinstance(action, Stall):
        action = action.then if action.then is not None else ""
    return action


def _message_id(data: bytes) -> str | None:
    head = data.split(b"\r\n\r\n", 1)[0]
    match = _MESSAGE_ID.search(head)
    if match is None:
        return None
    return re.sub(rb"\s+", b" ", match.group(1)).strip().decode("utf-8", "replace")


# --- one connection -------------------------------------------------------------


class _Wire:
    """Buffered line/body reading and reply writing for one connection."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, conn: Connection
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.conn = conn
        self.buf = bytearray()

    async def _fill(self) -> None:
        chunk = await self.reader.read(65536)
        if not chunk:
            raise EOFError
        self.buf += chunk

    async def line(self, limit: int = 16384) -> str:
        while True:
            end = self.buf.find(b"\n")
            if end >= 0:
                raw = bytes(self.buf[: end + 1])
                del self.buf[: end + 1]
                text = raw.rstrip(b"\r\n").decode("utf-8", "surrogateescape")
                self.conn.lines.append(("C", text))
                return text
            if len(self.buf) > limit:
                raise EOFError
            await self._fill()

    async def body(self, fault: DataFault | None) -> bytes:
        acc = bytearray(b"\r\n") + self.buf  # the CRLF that ended "DATA" may start the terminator
        self.buf = bytearray()
        searched = 0
        while True:
            end = acc.find(_TERMINATOR, searched)
            if end >= 0:
                self.buf = acc[end + len(_TERMINATOR) :]
                content = bytes(acc[2 : end + 2])
                self.conn.lines.append(("C", f"<message {len(content)} bytes>"))
                self.conn.lines.append(("C", "."))
                return _UNSTUFF.sub(b"", content)
            searched = max(0, len(acc) - len(_TERMINATOR))
            if fault is not None and len(acc) - 2 >= fault.after_bytes:
                self.conn.lines.append(("*", f"data fault after {len(acc) - 2} bytes"))
                await asyncio.sleep(fault.stall)
                raise _Dropped(True)
            chunk = await self.reader.read(65536)
            if not chunk:
                raise EOFError
            acc += chunk

    async def act(self, action: Action, default: str) -> int:
        """Perform an action; returns the reply code sent. Raises ``_Dropped``."""
        if isinstance(action, Stall):
            self.conn.lines.append(("*", f"stall {action.seconds}s"))
            await asyncio.sleep(action.seconds)
            return await self.act(action.then if action.then is not None else default, default)
        if isinstance(action, Drop):
            self.conn.lines.append(("*", "drop"))
            raise _Dropped(action.reset)
        lines = [action] if isinstance(action, str) else list(action)
        if lines == [""]:
            lines = [default]
        lines = [part for line in lines for part in line.split("\n")]
        await self.send(lines)
        return _code_of(lines)

    async def send(self, lines: Sequence[str]) -> None:
        for line in lines:
            self.conn.lines.append(("S", line))
        payload = "".join(f"{line.rstrip(chr(13))}\r\n" for line in lines)
        self.writer.write(payload.encode("utf-8", "surrogateescape"))
        await self.writer.drain()


class _Transaction:
    def __init__(self) -> None:
        self.mail_from: str | None = None
        self.params: tuple[str, ...] = ()
        self.recipients: list[str] = []


# --- the server -----------------------------------------------------------------


class ScriptedSmtpServer:
    # Set to False to run a whole test module against servers that never offer PIPELINING,
    # whatever their scripts say (the client then takes its one-command-at-a-time path).
    offer_pipelining = True

    def __init__(
        self,
        script: Script | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        tls_context: ssl.SSLContext | None = None,
        implicit_tls: bool = False,
    ) -> None:
        if implicit_tls and tls_context is None:
            raise ValueError("implicit_tls needs a tls_context")
        self.script = script or Script()
        self.host = host
        self.port = port
        self.tls_context = tls_context
        self.implicit_tls = implicit_tls
        self._lock = threading.Lock()
        self._messages: list[Delivery] = []
        self._counts: Counter[str] = Counter()
        self._connections: list[Connection] = []
        self._ids = itertools.count(1)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.active_connections = 0
        self.peak_connections = 0
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- lifecycle in the caller's loop

    async def start(self) -> ScriptedSmtpServer:
        self._server = await asyncio.start_server(
            self._handle,
            self.host,
            self.port,
            ssl=self.tls_context if self.implicit_tls else None,
            backlog=1024,
            limit=1 << 20,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
            self._server = None

    async def __aenter__(self) -> ScriptedSmtpServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- lifecycle in a background thread (for subprocesses under test)

    @contextlib.contextmanager
    def in_thread(self, timeout: float = 10.0) -> Iterator[ScriptedSmtpServer]:
        self.start_thread(timeout)
        try:
            yield self
        finally:
            self.stop_thread(timeout)

    def start_thread(self, timeout: float = 10.0) -> None:
        loop = asyncio.new_event_loop()
        started = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.start())
            except BaseException as exc:
                failure.append(exc)
                started.set()
                return
            started.set()
            loop.run_forever()
            loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=run, name="scripted-smtp", daemon=True)
        self._thread.start()
        if not started.wait(timeout):
            raise TimeoutError("scripted SMTP server did not start")
        if failure:
            raise failure[0]

    def stop_thread(self, timeout: float = 10.0) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        future = asyncio.run_coroutine_threadsafe(self.stop(), loop)
        with contextlib.suppress(Exception):
            future.result(timeout)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)
        self._loop = self._thread = None

    # -- what tests look at

    def url(self, tls: str = "none", **query: str) -> str:
        scheme = "smtp"
        extra = "".join(f"&{k}={v}" for k, v in query.items())
        return f"{scheme}://{self.host}:{self.port}?tls={tls}{extra}"

    @property
    def messages(self) -> list[Delivery]:
        with self._lock:
            return list(self._messages)

    @property
    def connections(self) -> list[Connection]:
        with self._lock:
            return list(self._connections)

    def count(self, recipient: str) -> int:
        with self._lock:
            return self._counts[recipient]

    @property
    def counts(self) -> Counter[str]:
        with self._lock:
            return Counter(self._counts)

    def transcript(self) -> str:
        return "\n---\n".join(c.text() for c in self.connections)

    async def wait_for_messages(self, count: int, within: float = 5.0) -> list[Delivery]:
        deadline = time.monotonic() + within
        # Polling, because messages may be recorded by a server on another thread's loop.
        while len(self.messages) < count and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        return self.messages

    def wait_for_messages_sync(self, count: int, within: float = 5.0) -> list[Delivery]:
        deadline = time.monotonic() + within
        while len(self.messages) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.messages

    # -- the protocol

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        conn = Connection(id=next(self._ids), tls=self.implicit_tls)
        with self._lock:
            self._connections.append(conn)
            self.active_connections += 1
            self.peak_connections = max(self.peak_connections, self.active_connections)
        wire = _Wire(reader, writer, conn)
        reset = False
        try:
            await self._session(wire, conn)
        except _Dropped as exc:
            reset = bool(exc.args and exc.args[0])
        except (EOFError, OSError, ssl.SSLError, asyncio.CancelledError):
            pass
        finally:
            conn.closed = True
            with self._lock:
                self.active_connections -= 1
            self._tasks.discard(task)
            transport = wire.writer.transport
            if reset:
                transport.abort()
            else:
                transport.close()

    def _resolve(self, rule: Rule, *args: Any) -> Action:
        return rule(*args) if callable(rule) else rule

    async def _session(self, wire: _Wire, conn: Connection) -> None:
        code = await wire.act(self._resolve(self.script.greeting, conn), "220 smtp.test ESMTP")
        if code != 220:
            # A refusing greeting (421, 554): the client should quit; keep the socket
            # open only long enough to answer that.
            with contextlib.suppress(EOFError):
                line = await asyncio.wait_for(wire.line(), 2)
                await wire.send(["221 2.0.0 Bye"] if line.upper().startswith("QUIT") else [])
            return
        greeted = False
        txn = _Transaction()
        while True:
            line = await wire.line()
            verb, _, arg = line.partition(" ")
            verb = verb.upper()
            if verb in ("EHLO", "HELO"):
                greeted, txn = True, _Transaction()
                await self._ehlo(wire, conn, verb, arg)
            elif verb == "STARTTLS":
                if await self._starttls(wire, conn):
                    greeted, txn = False, _Transaction()
            elif verb == "AUTH":
                await self._auth(wire, conn, arg)
            elif verb == "MAIL":
                await self._mail(wire, greeted, txn, arg)
            elif verb == "RCPT":
                await self._rcpt(wire, txn, arg)
            elif verb == "DATA":
                if await self._data(wire, conn, txn):
                    txn = _Transaction()
            elif verb == "RSET":
                txn = _Transaction()
                await wire.send(["250 2.0.0 Ok"])
            elif verb == "NOOP":
                await wire.send(["250 2.0.0 Ok"])
            elif verb == "QUIT":
                await wire.send(["221 2.0.0 Bye"])
                return
            elif verb == "VRFY":
                await wire.send(["252 2.5.2 Cannot VRFY user"])
            else:
                await wire.send(["500 5.5.2 Command not recognized"])

    async def _ehlo(self, wire: _Wire, conn: Connection, verb: str, arg: str) -> None:
        script = self.script
        if script.ehlo is not None:
            await wire.act(self._resolve(script.ehlo, arg), "250 smtp.test")
            return
        if verb == "HELO":
            await wire.send([f"250 {script.hostname}"])
            return
        features = []
        if script.pipelining and self.offer_pipelining:
            features.append("PIPELINING")
        if script.size is not None:
            features.append(f"SIZE {script.size}" if script.size else "SIZE")
        if script.eightbitmime:
            features.append("8BITMIME")
        if script.smtputf8:
            features.append("SMTPUTF8")
        if script.starttls and self.tls_context is not None and not conn.tls:
            features.append("STARTTLS")
        if script.auth and (conn.tls or not script.auth_requires_tls):
            features.append("AUTH PLAIN LOGIN")
        features.append("ENHANCEDSTATUSCODES")
        lines = [f"{script.hostname} greets {arg or 'you'}", *features]
        await wire.send([f"250-{x}" for x in lines[:-1]] + [f"250 {lines[-1]}"])

    async def _starttls(self, wire: _Wire, conn: Connection) -> bool:
        if self.tls_context is None or conn.tls or not self.script.starttls:
            await wire.send(["454 4.7.0 TLS not available"])
            return False
        await wire.send(["220 2.0.0 Ready to start TLS"])
        wire.buf.clear()  # RFC 3207 §4.2: nothing sent before the handshake counts
        await wire.writer.start_tls(self.tls_context)
        conn.tls = True
        conn.lines.append(("*", "tls established"))
        return True

    async def _auth(self, wire: _Wire, conn: Connection, arg: str) -> None:
        script = self.script
        if not script.auth:
            await wire.send(["502 5.5.1 AUTH not available"])
            return
        if script.auth_requires_tls and not conn.tls:
            await wire.send(["538 5.7.11 Encryption required for requested authentication"])
            return
        mechanism, _, initial = arg.partition(" ")
        mechanism = mechanism.upper()
        try:
            if mechanism == "PLAIN":
                raw = initial or await self._challenge(wire, "")
                _, user, password = base64.b64decode(raw).decode().split("\0", 2)
            elif mechanism == "LOGIN":
                raw_user = initial or await self._challenge(wire, "VXNlcm5hbWU6")
                user = base64.b64decode(raw_user).decode()
                password = base64.b64decode(await self._challenge(wire, "UGFzc3dvcmQ6")).decode()
            else:
                await wire.send(["504 5.5.4 Unrecognized authentication type"])
                return
        except (ValueError, UnicodeDecodeError):
            await wire.send(["501 5.5.2 Cannot decode response"])
            return
        if script.auth_reply is not None:
            code = await wire.act(self._resolve(script.auth_reply, user), "235 2.7.0 Ok")
        elif script.credentials is None or script.credentials == (user, password):
            code = await wire.act("235 2.7.0 Authentication successful", "")
        else:
            code = await wire.act("535 5.7.8 Authentication credentials invalid", "")
        if 200 <= code < 300:
            conn.authenticated_as = user

    async def _challenge(self, wire: _Wire, prompt: str) -> str:
        await wire.send([f"334 {prompt}".rstrip() if prompt else "334 "])
        answer = await wire.line()
        if answer == "*":
            raise ValueError("cancelled")
        return answer

    async def _mail(self, wire: _Wire, greeted: bool, txn: _Transaction, arg: str) -> None:
        if not greeted:
            await wire.send(["503 5.5.1 Error: send HELO/EHLO first"])
            return
        if txn.mail_from is not None:
            await wire.send(["503 5.5.1 Error: nested MAIL command"])
            return
        match = _ADDRESS.match(arg)
        if match is None:
            await wire.send(["501 5.5.4 Syntax: MAIL FROM:<address>"])
            return
        sender, params = match.group(1), tuple(match.group(2).split())
        code = await wire.act(self._resolve(self.script.mail, sender), "250 2.1.0 Ok")
        if 200 <= code < 300:
            txn.mail_from, txn.params = sender, params

    async def _rcpt(self, wire: _Wire, txn: _Transaction, arg: str) -> None:
        if txn.mail_from is None:
            await wire.send(["503 5.5.1 Error: need MAIL command"])
            return
        match = _ADDRESS.match(arg)
        if match is None:
            await wire.send(["501 5.5.4 Syntax: RCPT TO:<address>"])
            return
        script = self.script
        if script.max_rcpt is not None and len(txn.recipients) >= script.max_rcpt:
            await wire.send([script.too_many])
            return
        recipient = match.group(1)
        code = await wire.act(self._resolve(script.rcpt, recipient), "250 2.1.5 Ok")
        if 200 <= code < 300:
            txn.recipients.append(recipient)

    async def _data(self, wire: _Wire, conn: Connection, txn: _Transaction) -> bool:
        """Returns True when the transaction is over (the client sent the dot)."""
        if txn.mail_from is None or not txn.recipients:
            await wire.send(["554 5.5.1 Error: no valid recipients"])
            return False
        script = self.script
        code = await wire.act(self._resolve(script.data, txn.recipients), "354 Go ahead")
        if code != 354:
            return False
        data = await wire.body(script.data_fault)
        delivery = Delivery(
            mail_from=txn.mail_from,
            recipients=tuple(txn.recipients),
            data=data,
            message_id=_message_id(data),
            connection_id=conn.id,
            mail_params=txn.params,
        )
        action = self._resolve(self.script.dot, delivery)
        final = _final_action(action)
        kept = final.keep if isinstance(final, Drop) else 200 <= _code_of(_lines(final)) < 300
        if kept:
            with self._lock:
                self._messages.append(delivery)
                self._counts.update(delivery.recipients)
        await wire.act(action, "250 2.0.0 Ok: queued")
        return True


def _lines(action: Action) -> list[str]:
    if isinstance(action, (Drop, Stall)):
        return []
    if isinstance(action, str):
        return [action or "250 2.0.0 Ok: queued"]
    return list(action)
