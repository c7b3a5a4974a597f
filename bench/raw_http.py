"""A lean HTTP/1.1 keep-alive client for the single-POST load and the idle trickle.

A general-purpose client spends about a millisecond of CPU per request in Python; on two
cores shared with the server under test that caps the load generator near the rate it is
meant to measure, and at idle it adds its own time to every latency (GET /healthz took
5.3 ms through httpx and 1.6 ms through this client on the same server). This one writes
each request as prepared bytes and reads responses by Content-Length, which is all Kirim's
API needs (no chunked bodies, no redirects).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from typing import Any

from bench.load import LoadOutcome, spread

Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


def request_bytes(host: str, port: int, path: str, api_key: str, body: bytes) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\n"
        f"Host: {host}:{port}\r\n"
        f"Authorization: Bearer {api_key}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "\r\n"
    )
    return head.encode() + body


def parse_head(head: bytes) -> tuple[int, int]:
    """The status code and Content-Length of a response head (without its blank line)."""
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    return status, length


async def post_singles(
    host: str,
    ports: Sequence[int],
    api_key: str,
    count: int,
    concurrency: int,
    body_of: Callable[[int], dict[str, Any]],
) -> LoadOutcome:
    """``count`` POST /v1/messages over ``concurrency`` keep-alive connections, dealt
    round-robin over the API ``ports``. Each connection takes the next message when its
    last one is answered, so a faster server is given more of them."""
    outcome = LoadOutcome()
    indexes = iter(range(count))

    async def connection(port: int) -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            for index in indexes:
                body = json.dumps(body_of(index)).encode()
                message_id = await _post(reader, writer, host, port, api_key, body, outcome)
                if message_id is not None:
                    outcome.ids.append(message_id)
        except (OSError, asyncio.IncompleteReadError) as error:
            outcome.fail(type(error).__name__, str(error))
        finally:
            writer.close()

    outcome.started = time.monotonic()
    await asyncio.gather(*(connection(port) for port in spread(ports, concurrency)))
    outcome.finished = time.monotonic()
    return outcome


async def post_paced(
    host: str,
    ports: Sequence[int],
    api_key: str,
    count: int,
    per_second: float,
    body_of: Callable[[int], dict[str, Any]],
) -> tuple[list[float], LoadOutcome]:
    """Open-loop trickle: request i starts at i/per_second whatever earlier ones are doing,
    dealt round-robin over the API ``ports``, each on an idle keep-alive connection to its
    port (a new one while all are busy). Returns the start time of every accepted request,
    in start order; ``outcome.ids`` are in the same order."""
    outcome = LoadOutcome()
    accepted: list[tuple[float, str]] = []
    idle: dict[int, list[Connection]] = {port: [] for port in ports}
    opened: list[asyncio.StreamWriter] = []

    async def send(index: int) -> None:
        port = ports[index % len(ports)]
        body = json.dumps(body_of(index)).encode()
        sent = time.monotonic()
        try:
            if idle[port]:
                reader, writer = idle[port].pop()
            else:
                reader, writer = await asyncio.open_connection(host, port)
                opened.append(writer)
            message_id = await _post(reader, writer, host, port, api_key, body, outcome)
        except (OSError, asyncio.IncompleteReadError) as error:
            outcome.fail(type(error).__name__, str(error))
            return
        idle[port].append((reader, writer))
        if message_id is not None:
            accepted.append((sent, message_id))

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
        for writer in opened:
            writer.close()
    outcome.finished = time.monotonic()
    accepted.sort()
    outcome.ids = [message_id for _, message_id in accepted]
    return [sent for sent, _ in accepted], outcome


async def _post(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    host: str,
    port: int,
    api_key: str,
    body: bytes,
    outcome: LoadOutcome,
) -> str | None:
    """One POST /v1/messages on an open connection: the message id of a 202, else None
    (the failure counted in ``outcome``)."""
    writer.write(request_bytes(host, port, "/v1/messages", api_key, body))
    head = await reader.readuntil(b"\r\n\r\n")
    status, length = parse_head(head[:-4])
    data = await reader.readexactly(length)
    if status != 202:
        outcome.fail(str(status), data.decode(errors="replace"))
        return None
    return str(json.loads(data)["id"])
