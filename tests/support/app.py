"""Running the real app on a loopback port inside a test's event loop."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import uvicorn

from service.api.app import create_app
from service.cli import KEEP_ALIVE_SECONDS
from service.db.engine import Database
from service.db.keys import create_key
from service.delivery.transport import Transport
from service.settings import Settings


@dataclass
class LiveApp:
    base_url: str
    key: str
    client: httpx.AsyncClient
    app: Any

    @property
    def worker(self) -> Any:
        return self.app.state.worker

    async def send(self, **body: Any) -> httpx.Response:
        return await self.client.post("/v1/messages", json=body)

    async def get(self, message_id: str) -> dict[str, Any]:
        r = await self.client.get(f"/v1/messages/{message_id}")
        r.raise_for_status()
        data: dict[str, Any] = r.json()
        return data


def settings_for(
    database_url: str, smtp_url: str = "smtp://127.0.0.1:9?tls=none", **kw: Any
) -> Settings:
    base: dict[str, Any] = {
        "database_url": database_url,
        "smtp_url": smtp_url,
        "retry_min_delay": 0.2,
        "retry_max_delay": 0.5,
        "lease_seconds": 30,
        "worker_poll_interval": 0.05,
        "smtp_timeout_scale": 0.02,
    }
    base.update(kw)
    return Settings(**base)


async def make_key(
    database_url: str,
    *,
    tenant: str = "default",
    scopes: tuple[str, ...] = ("messages:send", "messages:read", "webhooks:manage", "keys:manage"),
) -> str:
    db = Database(database_url)
    try:
        key, _ = await create_key(db, name="test", tenant_id=tenant, scopes=scopes, now=time.time())
        return key
    finally:
        await db.dispose()


@contextlib.asynccontextmanager
async def live_app(
    settings: Settings,
    *,
    run_workers: bool = True,
    transport: Transport | None = None,
    idle_delivery: bool = False,
) -> AsyncIterator[LiveApp]:
    app = create_app(
        settings, run_workers=run_workers, transport=transport, idle_delivery=idle_delivery
    )
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    # Keep-alive as `kirim serve` has it: with uvicorn's default of 5 s, a request sent on
    # a connection left idle while a test waits can meet the server closing it (ReadError).
    config = uvicorn.Config(
        app,
        log_level="warning",
        lifespan="on",
        access_log=False,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    deadline = time.monotonic() + 10
    while not server.started:
        if task.done() or time.monotonic() > deadline:
            raise RuntimeError("app did not start")
        await asyncio.sleep(0.01)
    key = await make_key(settings.database_url.get_secret_value())
    base = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(
        base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=30, trust_env=False
    ) as client:
        try:
            yield LiveApp(base, key, client, app)
        finally:
            server.should_exit = True
            await asyncio.wait_for(task, 30)
            sock.close()


async def wait_for(
    predicate: Callable[[], Awaitable[bool]], *, within: float = 15, interval: float = 0.05
) -> None:
    """Poll ``predicate`` until true; fail the test after ``within`` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {within}s")
