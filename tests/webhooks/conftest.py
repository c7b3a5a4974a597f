"""Fixtures for webhook tests: a connection spy and a fake resolver (no real DNS)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from typing import Any

import pytest


class ConnectSpy:
    """Records every outgoing TCP connection attempt made through socket or asyncio."""

    def __init__(self) -> None:
        self.attempts: list[tuple[str, int]] = []

    def hosts(self) -> set[str]:
        return {host for host, _ in self.attempts}


@pytest.fixture
def connect_spy(monkeypatch: pytest.MonkeyPatch) -> Iterator[ConnectSpy]:
    spy = ConnectSpy()
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex
    real_create_connection = asyncio.base_events.BaseEventLoop.create_connection

    def record(address: Any) -> None:
        if isinstance(address, tuple):
            spy.attempts.append((str(address[0]), int(address[1])))

    def connect(self: socket.socket, address: Any) -> None:
        record(address)
        return real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        record(address)
        return real_connect_ex(self, address)

    async def create_connection(self: Any, *args: Any, **kwargs: Any) -> Any:
        host = kwargs.get("host", args[1] if len(args) > 1 else None)
        port = kwargs.get("port", args[2] if len(args) > 2 else None)
        if host is not None:
            spy.attempts.append((str(host), int(port or 0)))
        return await real_create_connection(self, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(asyncio.base_events.BaseEventLoop, "create_connection", create_connection)
    yield spy


class FakeResolver:
    """Answers from a fixed table and records every lookup; unknown names fail."""

    def __init__(self, table: dict[str, list[str]] | None = None) -> None:
        self.table = dict(table or {})
        self.calls: list[tuple[str, int]] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append((host, port))
        if host not in self.table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return list(self.table[host])


@pytest.fixture
def resolver() -> FakeResolver:
    return FakeResolver()
