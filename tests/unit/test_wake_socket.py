"""Wake-ups between processes sharing a SQLite file: Unix datagram sockets in one directory."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.db import wake_socket
from service.db.wake_socket import HOOKS, WakeListener, WakePublisher, directory_for_url


class Calls:
    def __init__(self) -> None:
        self.queue = 0
        self.hooks = 0
        self.event = asyncio.Event()

    def on_queue(self) -> None:
        self.queue += 1
        self.event.set()

    def on_hooks(self) -> None:
        self.hooks += 1
        self.event.set()

    async def next(self) -> None:
        await asyncio.wait_for(self.event.wait(), 5)
        self.event.clear()


@pytest.fixture
def base() -> Iterator[Path]:
    # pytest's tmp_path is too long for a Unix socket path (107 bytes).
    path = Path(tempfile.mkdtemp(prefix="kw-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _short_dir(base: Path) -> Path:
    return wake_socket.wake_directory(base / "kirim.db", base=str(base))


async def test_a_publish_wakes_every_listener_but_not_its_own(base: Path) -> None:
    directory = _short_dir(base)
    a, b = Calls(), Calls()
    first, second = WakeListener(directory, a.on_queue), WakeListener(directory, b.on_queue)
    assert first.start() and second.start()
    await a.next()  # each listener wakes once when it starts: it may have missed a commit
    await b.next()
    publisher = WakePublisher(directory)
    publisher.own = first.path  # the publishing process wakes its own worker directly
    try:
        publisher.notify()
        await b.next()
        await asyncio.sleep(0.05)
        assert (a.queue, b.queue) == (1, 2)
        assert second.received == 1 and publisher.sent == 1
    finally:
        first.close()
        second.close()
        publisher.close()
    assert not directory.exists()  # each listener removed its socket, the last the directory


async def test_webhook_wakes_are_told_apart_from_queue_wakes(base: Path) -> None:
    directory = _short_dir(base)
    calls = Calls()
    listener = WakeListener(directory, calls.on_queue, calls.on_hooks)
    assert listener.start()
    await calls.next()
    publisher = WakePublisher(directory)
    try:
        publisher.notify(HOOKS)
        await calls.next()
        assert (calls.queue, calls.hooks) == (1, 1)
        for _ in range(50):  # a burst is drained in one go and calls back once per kind
            publisher.notify()
        await calls.next()
        await asyncio.sleep(0.05)
        assert calls.queue <= 3 and calls.hooks == 1
    finally:
        listener.close()
        publisher.close()


async def test_a_dead_listener_s_socket_is_removed_and_a_new_one_is_found(base: Path) -> None:
    directory = _short_dir(base)
    directory.mkdir(mode=0o700)
    # A process that died without cleaning up: a socket file nobody is bound to.
    stale = directory / "12345-dead.sock"
    orphan = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    orphan.bind(str(stale))
    orphan.close()
    publisher = WakePublisher(directory)
    publisher.notify()
    assert not stale.exists() and publisher.sent == 0
    calls = Calls()
    listener = WakeListener(directory, calls.on_queue)
    assert listener.start()
    await calls.next()
    try:
        publisher.notify()  # a socket bound since the last listing is found at once
        await calls.next()
        assert publisher.sent == 1
    finally:
        listener.close()
        publisher.close()
    assert not directory.exists()  # the last listener out removed it


async def test_a_directory_others_can_enter_is_not_used(base: Path) -> None:
    directory = _short_dir(base)
    directory.mkdir(mode=0o700)
    os.chmod(directory, 0o777)
    calls = Calls()
    listener = WakeListener(directory, calls.on_queue)
    assert not listener.start()  # workers fall back to polling
    assert list(directory.iterdir()) == []


def test_directory_for_url() -> None:
    a = directory_for_url("sqlite:///./kirim.db")
    b = directory_for_url(f"sqlite:///{Path('kirim.db').resolve()}?mode=rwc")
    assert a is not None and a == b
    assert len(str(a / "4194304-abcdef01.sock")) < 100  # Unix socket paths are short
    assert directory_for_url("sqlite:////srv/a.db") != directory_for_url("sqlite:////srv/b.db")
    assert directory_for_url("sqlite://") is None
    assert directory_for_url("sqlite:///:memory:") is None
    assert directory_for_url("postgresql://postgres@127.0.0.1/test") is None
