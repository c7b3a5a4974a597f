"""Helpers for end-to-end webhook tests: a live app that may call loopback receivers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook

from service.settings import Settings
from tests.support.app import LiveApp, settings_for
from tests.support.http_receiver import HttpReceiver, RecordedRequest


def hook_settings(
    database_url: str, smtp_url: str = "smtp://127.0.0.1:9?tls=none", **kw: Any
) -> Settings:
    base: dict[str, Any] = {
        "webhook_allowed_networks": "127.0.0.0/8,::1/128",
        "webhook_retry_delays": "0.3,0.6,0.9",
        "webhook_timeout": 5,
        "webhook_lease_seconds": 10,
    }
    base.update(kw)
    return settings_for(database_url, smtp_url, **base)


async def register(app: LiveApp, url: str, **body: Any) -> dict[str, Any]:
    r = await app.client.post("/v1/webhooks", json={"url": url, **body})
    assert r.status_code == 201, r.text
    data: dict[str, Any] = r.json()
    return data


async def send_one(app: LiveApp, to: str = "ann@example.com", **extra: Any) -> str:
    r = await app.send(
        **{"from": "shop@example.com"}, to=[to], subject="Receipt", text="Thanks", **extra
    )
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


def verify(secret: str, request: RecordedRequest) -> dict[str, Any]:
    """Verify with the reference implementation; raises if the signature is wrong."""
    payload: dict[str, Any] = Webhook(secret).verify(request.body, request.headers)
    return payload


def events_of(requests: list[RecordedRequest]) -> list[dict[str, Any]]:
    import json

    return [json.loads(r.body) for r in requests]


async def deliveries(app: LiveApp, endpoint_id: str, **params: Any) -> list[dict[str, Any]]:
    r = await app.client.get(f"/v1/webhooks/{endpoint_id}/deliveries", params=params)
    assert r.status_code == 200, r.text
    data: list[dict[str, Any]] = r.json()["data"]
    return data


async def until(
    predicate: Callable[[], Awaitable[bool]], *, within: float = 20, interval: float = 0.05
) -> None:
    """Poll ``predicate`` until true; fail the test after ``within`` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {within}s")


@pytest.fixture
def receiver() -> Iterator[HttpReceiver]:
    with HttpReceiver() as rec:
        yield rec


def no_requests_within(receiver: HttpReceiver, seconds: float) -> None:
    time.sleep(seconds)
    assert receiver.requests == []


__all__ = ["httpx"]


@pytest.fixture
def connect_spy_loopback(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Every TCP connect made in this process (socket and asyncio), as (host, port)."""
    import socket

    attempts: list[tuple[str, int]] = []
    real_connect = socket.socket.connect
    real_create = asyncio.base_events.BaseEventLoop.create_connection

    def connect(self: socket.socket, address: Any) -> None:
        if isinstance(address, tuple):
            attempts.append((str(address[0]), int(address[1])))
        return real_connect(self, address)

    async def create_connection(self: Any, *args: Any, **kwargs: Any) -> Any:
        host = kwargs.get("host", args[1] if len(args) > 1 else None)
        port = kwargs.get("port", args[2] if len(args) > 2 else None)
        if host is not None:
            attempts.append((str(host), int(port or 0)))
        return await real_create(self, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(asyncio.base_events.BaseEventLoop, "create_connection", create_connection)
    return attempts
