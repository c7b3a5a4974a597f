"""The batch cap: at most N batch requests are read and handled at once, the rest wait."""

from __future__ import annotations

import asyncio

from starlette.types import Message, Receive, Scope, Send

from service.api.limits import ConcurrencyCap

PATH = "/v1/messages/batch"


def _scope(path: str = PATH, method: str = "POST") -> Scope:
    return {"type": "http", "path": path, "method": method, "headers": []}


async def _receive() -> Message:
    return {"type": "http.request", "body": b"{}", "more_body": False}


async def _send(_message: Message) -> None:
    return None


async def test_no_more_than_the_limit_run_at_once_and_all_finish() -> None:
    running = 0
    most = 0
    release = asyncio.Event()
    finished = 0

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        nonlocal running, most, finished
        await receive()  # reading the body happens inside the cap
        running += 1
        most = max(most, running)
        await release.wait()
        running -= 1
        finished += 1

    cap = ConcurrencyCap(app, PATH, limit=2)
    tasks = [asyncio.create_task(cap(_scope(), _receive, _send)) for _ in range(10)]
    for _ in range(20):
        await asyncio.sleep(0)
    assert running == 2  # eight wait, unread
    release.set()
    await asyncio.gather(*tasks)
    assert (most, finished) == (2, 10)


async def test_other_requests_and_zero_are_not_capped() -> None:
    running = 0
    release = asyncio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        nonlocal running
        running += 1
        await release.wait()

    capped = ConcurrencyCap(app, PATH, limit=1)
    unlimited = ConcurrencyCap(app, PATH, limit=0)
    tasks = [
        asyncio.create_task(capped(_scope("/v1/messages"), _receive, _send)),
        asyncio.create_task(capped(_scope(method="GET"), _receive, _send)),
        *(asyncio.create_task(unlimited(_scope(), _receive, _send)) for _ in range(3)),
    ]
    for _ in range(20):
        await asyncio.sleep(0)
    assert running == 5
    release.set()
    await asyncio.gather(*tasks)
