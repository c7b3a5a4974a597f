"""A lean HTTP/1.1 keep-alive client for the single-POST load, the batches and the trickle.

A general-purpose client spends about a millisecond of CPU per request in Python; on two
cores shared with the server under test that caps the load generator near the rate it is
meant to measure, and at idle it adds its own time to every latency (GET /healthz took
5.3 ms through httpx and 1.6 ms through this client on the same server). So every request
is built (JSON and head) before the clock starts, and each connection is an
``asyncio.Protocol`` that reads a response by Content-Length as its bytes arrive: for the
single POSTs the next request is written from within ``data_received``, without a task, a
stream or a future per request. That is all Kirim's API needs (no chunked bodies, no
redirects, no 1xx).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, cast

from bench import load

SEND_PATH = "/v1/messages"
# Answer to a whole response: its status and body.
Answer = Callable[[int, bytes], None]


def request_prefix(host: str, port: int, path: str) -> bytes:
    """The part of a request that depends on the connection: request line and Host."""
    return f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n".encode()


def request_rest(api_key: str, body: bytes) -> bytes:
    """The rest of a request after ``request_prefix``: the other headers and the body."""
    head = (
        f"Authorization: Bearer {api_key}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "\r\n"
    )
    return head.encode() + body


def single_requests(
    api_key: str, count: int, body_of: Callable[[int], dict[str, Any]]
) -> list[bytes]:
    """Request ``index`` of a load after its prefix, the body as the load always sent it."""
    return [request_rest(api_key, json.dumps(body_of(index)).encode()) for index in range(count)]


_ID_START = b'{"id":"'


def message_id(body: bytes) -> str:
    """The id of a 202 body. Kirim writes compact JSON with the id first, which is read
    without parsing the rest; any other shape (or an escape in the id) goes to json.loads."""
    if body.startswith(_ID_START):
        end = body.find(b'"', 7)
        if end > 7 and body.find(b"\\", 7, end) < 0:
            return body[7:end].decode()
    return str(json.loads(body)["id"])


def _not_connected(data: bytes) -> None:
    raise ConnectionError("not connected")


class _Http(asyncio.Protocol):
    """The client side of one keep-alive connection with at most one request out: gathers
    each response across reads and hands it whole to ``answered``."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.waiting = False  # a request is out and its response not yet whole
        self.closed = False
        self._buffer = bytearray()  # a response that came in more than one read
        self._want = 0  # its whole length once its head is in, else 0
        self._write: Callable[[bytes], None] = _not_connected

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self._write = self.transport.write

    def send(self, request: bytes) -> None:
        self.waiting = True
        self._write(request)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self._buffer:
            self._buffer += data
            if len(self._buffer) < self._want:
                return
            data = bytes(self._buffer)
            self._buffer.clear()
        end = data.find(b"\r\n\r\n")
        if end < 0:
            self._buffer += data
            return
        # An exception here (not HTTP/1) closes the transport: connection_lost counts it.
        if not data.startswith(b"HTTP/1."):
            raise ValueError(f"not an HTTP/1 response: {data[:40]!r}")
        status = int(data[9:12])
        # Either spelling uvicorn or any server writes, found without copying the head.
        at = data.find(b"\r\ncontent-length:", 0, end)
        if at < 0:
            at = data.find(b"\r\nContent-Length:", 0, end)
        if at < 0:
            at = data[:end].lower().find(b"\r\ncontent-length:")
        length = 0
        if at >= 0:
            stop = data.find(b"\r\n", at + 17, end)
            length = int(data[at + 17 : stop if stop >= 0 else end])
        total = end + 4 + length
        if len(data) < total:
            self._buffer += data
            self._want = total
            return
        self._want = 0
        if len(data) > total:  # not expected without pipelining; kept for the next read
            self._buffer += data[total:]
        self.waiting = False
        self.answered(status, data[end + 4 : total])

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        error: Exception | None = None
        if self.waiting:
            self.waiting = False
            # The server closed (EOF) mid-response: the error a stream reader gives.
            error = exc or asyncio.IncompleteReadError(bytes(self._buffer), self._want or None)
        self.lost(error)

    def answered(self, status: int, body: bytes) -> None:
        raise NotImplementedError

    def lost(self, error: Exception | None) -> None:
        """The connection closed; ``error`` is why a request got no whole response."""


class Pipeline(_Http):
    """One connection of the single-POST load: writes the next prepared request as soon as
    the last is answered, while the ``indexes`` shared by all connections last."""

    def __init__(
        self,
        prefix: bytes,
        requests: Sequence[bytes],
        indexes: Iterator[int],
        answer: Answer,
        outcome: load.LoadOutcome,
        done: asyncio.Future[None],
    ) -> None:
        super().__init__()
        self.prefix = prefix
        self.requests = requests
        self.indexes = indexes
        self.answer = answer
        self.outcome = outcome
        self.done = done

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._next()

    def answered(self, status: int, body: bytes) -> None:
        self.answer(status, body)
        self._next()

    def _next(self) -> None:
        index = next(self.indexes, None)
        if index is None:
            self.close()
            self._finish()
        else:
            # The Host line is per port, the rest per message: joining ~700 bytes is a
            # copy, cheaper than a prepared copy of every request for every port.
            self.send(self.prefix + self.requests[index])

    def lost(self, error: Exception | None) -> None:
        if error is not None:
            self.outcome.fail(type(error).__name__, str(error))
        self._finish()

    def _finish(self) -> None:
        if not self.done.done():
            self.done.set_result(None)


class Connection(_Http):
    """A keep-alive connection for requests awaited one at a time (batches, trickle)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._loop = loop
        self._response: asyncio.Future[tuple[int, bytes]] | None = None

    def request(self, data: bytes) -> asyncio.Future[tuple[int, bytes]]:
        """The (status, body) of the response to ``data``; OSError or IncompleteReadError
        if the connection closes first."""
        self._response = self._loop.create_future()
        if self.closed:
            self._response.set_exception(ConnectionResetError("connection closed"))
        else:
            self.send(data)
        return self._response

    def answered(self, status: int, body: bytes) -> None:
        if self._response is not None and not self._response.done():
            self._response.set_result((status, body))

    def lost(self, error: Exception | None) -> None:
        if error is not None and self._response is not None and not self._response.done():
            self._response.set_exception(error)


async def connect(host: str, port: int) -> Connection:
    loop = asyncio.get_running_loop()
    _, connection = await loop.create_connection(lambda: Connection(loop), host, port)
    return connection


def single_answer(outcome: load.LoadOutcome) -> Answer:
    ids = outcome.ids

    def answer(status: int, body: bytes) -> None:
        if status == 202:
            try:
                ids.append(message_id(body))
            except (ValueError, KeyError, TypeError):
                outcome.fail("202 without an id", body.decode(errors="replace"))
        else:
            outcome.fail(str(status), body.decode(errors="replace"))

    return answer


async def post_singles(
    host: str,
    ports: Sequence[int],
    api_key: str,
    count: int,
    concurrency: int,
    body_of: Callable[[int], dict[str, Any]],
) -> load.LoadOutcome:
    """``count`` POST /v1/messages over ``concurrency`` keep-alive connections, dealt
    round-robin over the API ``ports``. Each connection takes the next message when its
    last one is answered, so a faster server is given more of them. A connection that
    fails (or closes mid-response) counts one failure and takes no more messages."""
    requests = single_requests(api_key, count, body_of)
    prefixes = {port: request_prefix(host, port, SEND_PATH) for port in ports}
    loop = asyncio.get_running_loop()
    outcome = load.LoadOutcome()
    answer = single_answer(outcome)
    indexes = iter(range(count))

    async def connection(port: int) -> None:
        done: asyncio.Future[None] = loop.create_future()
        pipeline = Pipeline(prefixes[port], requests, indexes, answer, outcome, done)
        try:
            await loop.create_connection(lambda: pipeline, host, port)
        except OSError as error:
            outcome.fail(type(error).__name__, str(error))
            return
        try:
            await done
        finally:
            pipeline.close()

    outcome.started = time.monotonic()
    await asyncio.gather(*(connection(port) for port in load.spread(ports, concurrency)))
    outcome.finished = time.monotonic()
    return outcome


async def post_paced(
    host: str,
    ports: Sequence[int],
    api_key: str,
    count: int,
    per_second: float,
    body_of: Callable[[int], dict[str, Any]],
) -> tuple[list[float], load.LoadOutcome]:
    """Open-loop trickle: request i starts at i/per_second whatever earlier ones are doing,
    dealt round-robin over the API ``ports``, each on an idle keep-alive connection to its
    port (a new one while all are busy). Returns the start time of every accepted request,
    in start order; ``outcome.ids`` are in the same order."""
    requests = single_requests(api_key, count, body_of)
    prefixes = {port: request_prefix(host, port, SEND_PATH) for port in ports}
    outcome = load.LoadOutcome()
    accepted: list[tuple[float, str]] = []
    idle: dict[int, list[Connection]] = {port: [] for port in ports}
    opened: list[Connection] = []

    async def send(index: int) -> None:
        port = ports[index % len(ports)]
        sent = time.monotonic()
        try:
            connection = _idle(idle[port])
            if connection is None:
                connection = await connect(host, port)
                opened.append(connection)
            status, body = await connection.request(prefixes[port] + requests[index])
        except (OSError, asyncio.IncompleteReadError) as error:
            outcome.fail(type(error).__name__, str(error))
            return
        idle[port].append(connection)
        if status != 202:
            outcome.fail(str(status), body.decode(errors="replace"))
            return
        try:
            accepted.append((sent, message_id(body)))
        except (ValueError, KeyError, TypeError):
            outcome.fail("202 without an id", body.decode(errors="replace"))

    outcome.started = time.monotonic()
    tasks = []
    try:
        for index in range(count):
            delay = outcome.started + index / per_second - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(send(index)))
        await asyncio.gather(*tasks)
    finally:
        for connection in opened:
            connection.close()
    outcome.finished = time.monotonic()
    accepted.sort()
    outcome.ids = [ident for _, ident in accepted]
    return [sent for sent, _ in accepted], outcome


def _idle(connections: list[Connection]) -> Connection | None:
    """An idle connection still open (the server may have closed one while it waited)."""
    while connections:
        connection = connections.pop()
        if not connection.closed:
            return connection
    return None
