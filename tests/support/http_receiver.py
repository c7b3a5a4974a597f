"""A real HTTP/1.1 server on loopback for tests that receive webhooks.

It runs its own event loop in a background thread, so async tests, sync tests and
tests that drive a subprocess can all use it. Every request is recorded; replies are
scripted per request (a queue, optionally per path) with a default for the rest. The
server can start "down" (its port bound but not listening, so connections are refused)
and come up later on the same port.
"""

from __future__ import annotations

import asyncio
import http
import socket
import ssl
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

_MAX_LINE = 64 * 1024
_CHUNK = 64 * 1024


@dataclass(frozen=True)
class Reply:
    """One scripted answer. ``delay`` sleeps before answering; ``drop`` closes silently."""

    status: int = 200
    body: bytes = b"ok"
    headers: tuple[tuple[str, str], ...] = ()
    delay: float = 0.0
    drop: bool = False

    @classmethod
    def redirect(cls, location: str, status: int = 302) -> Reply:
        return cls(status, b"", (("location", location),))

    @classmethod
    def gone(cls) -> Reply:
        return cls(410, b"gone")

    @classmethod
    def too_many(cls, retry_after: str | int, status: int = 429) -> Reply:
        return cls(status, b"slow down", (("retry-after", str(retry_after)),))


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    raw_headers: tuple[tuple[str, str], ...]
    body: bytes
    arrived_at: float  # time.time() when the request was complete
    arrived_monotonic: float
    headers: dict[str, str] = field(default_factory=dict)  # lower-case names, last wins

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


class HttpReceiver:
    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        ssl_context: ssl.SSLContext | None = None,
        default: Reply | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self._ssl = ssl_context
        self._default = default or Reply()
        self._queue: deque[Reply] = deque()
        self._path_queues: dict[str, deque[Reply]] = {}
        self._requests: list[RecordedRequest] = []
        self._cond = threading.Condition()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    # -- lifecycle ---------------------------------------------------------------

    def start(self, *, up: bool = True) -> HttpReceiver:
        """Start the loop thread and bind the port; ``up=False`` leaves it refusing.

        Starting a started receiver does nothing, so ``with HttpReceiver().start(up=False)``
        keeps it down.
        """
        if self._loop is not None:
            return self
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name="http-receiver", daemon=True)
        self._thread.start()
        self._call(self._bind())
        if up:
            self.up()
        return self

    def up(self) -> None:
        """Start accepting connections on the bound port."""
        self._call(self._up())

    def down(self) -> None:
        """Stop listening and drop open connections; the port stays reserved and refuses."""
        self._call(self._down())

    def stop(self) -> None:
        if self._loop is None:
            return
        self._call(self._down(rebind=False))
        self._call(_cancel_other_tasks())
        self._loop.call_soon_threadsafe(self._loop.stop)
        assert self._thread is not None
        self._thread.join(timeout=5)
        self._loop.close()
        self._loop = None

    def __enter__(self) -> HttpReceiver:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    async def __aenter__(self) -> HttpReceiver:
        return await asyncio.to_thread(self.start)

    async def __aexit__(self, *exc_info: object) -> None:
        await asyncio.to_thread(self.stop)

    # -- scripting and inspection ----------------------------------------------------

    @property
    def is_up(self) -> bool:
        return self._server is not None

    @property
    def url(self) -> str:
        scheme = "https" if self._ssl else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"

    def url_for(self, path: str = "/") -> str:
        return self.url + path

    def enqueue(self, *replies: Reply, path: str | None = None) -> None:
        """Answer the next requests (to ``path``, or to any path) with these replies."""
        with self._cond:
            queue = self._queue if path is None else self._path_queues.setdefault(path, deque())
            queue.extend(replies)

    def set_default(self, reply: Reply) -> None:
        with self._cond:
            self._default = reply

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._cond:
            return list(self._requests)

    def wait_for(self, count: int, timeout: float = 10.0) -> list[RecordedRequest]:
        """Block until ``count`` requests arrived; AssertionError after ``timeout``."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self._requests) >= count, timeout):
                raise AssertionError(
                    f"expected {count} requests within {timeout}s, got {len(self._requests)}"
                )
            return list(self._requests)

    async def wait_for_async(self, count: int, within: float = 10.0) -> list[RecordedRequest]:
        deadline = time.monotonic() + within
        while len(self.requests) < count:
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"expected {count} requests within {within}s, got {len(self.requests)}"
                )
            await asyncio.sleep(0.01)
        return self.requests

    # -- inside the loop thread ------------------------------------------------------

    def _call(self, coro: Any, timeout: float = 10.0) -> Any:
        assert self._loop is not None, "receiver not started"
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    async def _bind(self) -> None:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        self._sock = sock

    async def _up(self) -> None:
        if self._server is not None:
            return
        if self._sock is None:
            await self._bind()
        # A bound socket that never called listen() answers SYN with RST: "refused".
        self._server = await asyncio.start_server(
            self._handle, sock=self._sock, ssl=self._ssl, backlog=128
        )
        self._sock = None

    async def _down(self, rebind: bool = True) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.transport.abort()
            await self._server.wait_closed()
            self._server = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if rebind:
            await self._bind()

    def _next_reply(self, path: str) -> Reply:
        with self._cond:
            queue = self._path_queues.get(path)
            if queue:
                return queue.popleft()
            if self._queue:
                return self._queue.popleft()
            return self._default

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                request = await _read_request(reader)
                if request is None:
                    return
                with self._cond:
                    self._requests.append(request)
                    self._cond.notify_all()
                reply = self._next_reply(request.path.split("?", 1)[0])
                if reply.delay:
                    await asyncio.sleep(reply.delay)
                if reply.drop:
                    return
                close = (request.header("connection") or "").lower() == "close"
                await _write_reply(writer, reply, close)
                if close:
                    return
        except (ConnectionError, asyncio.IncompleteReadError, ValueError, ssl.SSLError):
            return
        finally:
            self._writers.discard(writer)
            writer.transport.abort()


async def _cancel_other_tasks() -> None:
    current = asyncio.current_task()
    tasks = [task for task in asyncio.all_tasks() if task is not current]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def _read_request(reader: asyncio.StreamReader) -> RecordedRequest | None:
    line = await reader.readline()
    if not line:
        return None
    method, path, _version = line.decode("latin-1").rstrip("\r\n").split(" ", 2)
    raw_headers: list[tuple[str, str]] = []
    while True:
        header_line = await reader.readline()
        if len(header_line) > _MAX_LINE:
            raise ValueError("header line too long")
        text = header_line.decode("latin-1").rstrip("\r\n")
        if not text:
            break
        name, _, value = text.partition(":")
        raw_headers.append((name.strip(), value.strip()))
    headers = {name.lower(): value for name, value in raw_headers}
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = await _read_chunked(reader)
    else:
        body = await reader.readexactly(int(headers.get("content-length", "0")))
    return RecordedRequest(
        method=method,
        path=path,
        raw_headers=tuple(raw_headers),
        body=body,
        arrived_at=time.time(),
        arrived_monotonic=time.monotonic(),
        headers=headers,
    )


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    body = bytearray()
    while True:
        size = int((await reader.readline()).split(b";", 1)[0].strip(), 16)
        if size == 0:
            while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                pass
            return bytes(body)
        body += await reader.readexactly(size)
        await reader.readexactly(2)


async def _write_reply(writer: asyncio.StreamWriter, reply: Reply, close: bool) -> None:
    try:
        phrase = http.HTTPStatus(reply.status).phrase
    except ValueError:
        phrase = "Status"
    lines = [f"HTTP/1.1 {reply.status} {phrase}"]
    names = {name.lower() for name, _ in reply.headers}
    if "content-length" not in names:
        lines.append(f"content-length: {len(reply.body)}")
    lines.append(f"connection: {'close' if close else 'keep-alive'}")
    lines.extend(f"{name}: {value}" for name, value in reply.headers)
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    for offset in range(0, len(reply.body), _CHUNK):
        writer.write(reply.body[offset : offset + _CHUNK])
        await writer.drain()
    await writer.drain()
