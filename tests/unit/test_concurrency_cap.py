"""The batch cap: at most N batch requests are read and handled at once, the rest wait."""

from __future__ import annotations

import asyncio
from pathlib import Path

from starlette.types import Message, Receive, Scope, Send

from service.api.app import create_app
from service.api.limits import BodyLimit, ConcurrencyCap
from service.settings import Settings

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


def test_the_app_caps_its_batch_route_with_the_setting(tmp_path: Path) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path}/k.db", batch_concurrency=3)
    app = create_app(settings, run_workers=False)
    caps = [m for m in app.user_middleware if m.cls is ConcurrencyCap]
    assert [(m.kwargs["path"], m.kwargs["limit"]) for m in caps] == [(PATH, 3)]
    # The path it caps is the batch route's, and the cap sits outside the body reader.
    assert "post" in app.openapi()["paths"][PATH]
    order = [m.cls for m in app.user_middleware]  # outermost first
    assert order.index(ConcurrencyCap) < order.index(BodyLimit)
