"""A lean HTTP/1.1 keep-alive client for the single-POST load.

A general-purpose client spends about a millisecond of CPU per request in Python; on two
cores shared with the server under test that caps the load generator near the rate it is
meant to measure. This one writes each request as prepared bytes and reads responses by
Content-Length, which is all Kirim's API needs (no chunked bodies, no redirects).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from typing import Any

from bench.load import LoadOutcome, spread


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
                writer.write(request_bytes(host, port, "/v1/messages", api_key, body))
                head = await reader.readuntil(b"\r\n\r\n")
                status, length = parse_head(head[:-4])
                data = await reader.readexactly(length)
                if status != 202:
                    outcome.fail(str(status), data.decode(errors="replace"))
                    continue
                outcome.ids.append(str(json.loads(data)["id"]))
        except (OSError, asyncio.IncompleteReadError) as error:
            outcome.fail(type(error).__name__, str(error))
        finally:
            writer.close()

    outcome.started = time.monotonic()
    await asyncio.gather(*(connection(port) for port in spread(ports, concurrency)))
    outcome.finished = time.monotonic()
    return outcome
