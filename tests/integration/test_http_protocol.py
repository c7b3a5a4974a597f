"""`kirim serve`'s HTTP protocol: one socket write per response, nothing held back.

A real uvicorn server on loopback runs ``HttpProtocol``; a counting layer under it sees
every write that reaches the socket's transport, and a raw socket client reads what
arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn

from service.api.http_protocol import HttpProtocol
from tests.support.ports import free_port

pytestmark = pytest.mark.asyncio

WRITES: list[bytes] = []


class CountingTransport(asyncio.Transport):
    """The real transport, with a record of each write handed to it."""

    def __init__(self, real: asyncio.Transport) -> None:
        super().__init__()
        self._real = real

    def write(self, data: Any) -> None:
        WRITES.append(bytes(data))
        self._real.write(data)

    def __getattribute__(self, name: str) -> Any:
        if name in ("write", "_real", "__class__"):
            return object.__getattribute__(self, name)
        return getattr(object.__getattribute__(self, "_real"), name)


class CountedProtocol(HttpProtocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(CountingTransport(transport))


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    path = scope["path"]
    if path == "/stream":
        # The first chunk must reach the client while the app still waits for it to ask
        # for the next: a gathered write that waited for the response's end would hang.
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"first;", "more_body": True})
        await STREAM_GO.wait()
        await send({"type": "http.response.body", "body": b"second", "more_body": False})
        return
    headers = [(b"content-type", b"text/plain"), (b"content-length", b"5")]
    if path == "/close":
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": 202, "headers": headers})
    await send({"type": "http.response.body", "body": b"hello"})


STREAM_GO = asyncio.Event()


@contextlib.asynccontextmanager
async def served() -> AsyncIterator[int]:
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, http=CountedProtocol, log_config=None, lifespan="on"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    for _ in range(200):
        if server.started:
            break
        await asyncio.sleep(0.01)
    try:
        yield port
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=10)


async def _request(
    port: int, path: str, times: int = 1
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode() * times)
    await writer.drain()
    return reader, writer


async def _response(reader: asyncio.StreamReader) -> bytes:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
    length = int(
        next(h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")).split(b":")[
            1
        ]
    )
    return head + await asyncio.wait_for(reader.readexactly(length), timeout=5)


async def test_a_response_leaves_in_one_write() -> None:
    WRITES.clear()
    async with served() as port:
        reader, writer = await _request(port, "/", times=3)  # keep-alive, pipelined
        answers = [await _response(reader) for _ in range(3)]
        writer.close()
    assert all(a.startswith(b"HTTP/1.1 202") and a.endswith(b"\r\n\r\nhello") for a in answers)
    responses = [w for w in WRITES if w.startswith(b"HTTP/1.1")]
    assert len(responses) == 3
    # Each write is a whole response: the headers and the body together.
    assert all(w.endswith(b"hello") for w in responses), WRITES


async def test_a_streamed_response_is_not_held_back() -> None:
    WRITES.clear()
    STREAM_GO.clear()
    async with served() as port:
        reader, writer = await _request(port, "/stream")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
        assert b"transfer-encoding: chunked" in head.lower()
        first = await asyncio.wait_for(reader.readuntil(b"first;\r\n"), timeout=5)
        assert first.endswith(b"first;\r\n")
        STREAM_GO.set()
        rest = await asyncio.wait_for(reader.readuntil(b"0\r\n\r\n"), timeout=5)
        assert b"second" in rest
        writer.close()


async def test_a_response_before_close_is_sent_whole() -> None:
    async with served() as port:
        reader, writer = await _request(port, "/close")
        data = await asyncio.wait_for(reader.read(), timeout=5)  # until the server closes
        writer.close()
    assert data.startswith(b"HTTP/1.1 202") and data.endswith(b"hello")
    assert b"connection: close" in data.lower()


async def test_a_malformed_request_gets_its_400_before_the_close() -> None:
    async with served() as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"NOT HTTP AT ALL\r\n\r\n")
        data = await asyncio.wait_for(reader.read(), timeout=5)  # until the server closes
        writer.close()
    assert data.startswith(b"HTTP/1.1 400"), data
