"""PostgreSQL LISTEN/NOTIFY: an accept in one process wakes idle workers in every other.

Accepting processes publish ``NOTIFY kirim_queue`` after each group commit; workers hold one
dedicated connection that LISTENs and turns every notification into ``Worker.wake()``.
Both sides keep their own asyncpg connection outside the SQLAlchemy pool (a LISTEN is tied
to one session) and reconnect with backoff when PostgreSQL restarts. A notification is only
a hint: polling stays the fallback, and a (re)connected listener wakes its worker once in
case something was committed while it was away.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import asyncpg

from service.db import wake_socket

if TYPE_CHECKING:
    from service.settings import Settings

log = logging.getLogger(__name__)

CHANNEL = "kirim_queue"


def asyncpg_dsn(url: str) -> str:
    """The libpq-style DSN asyncpg accepts, from any of Kirim's PostgreSQL URL spellings."""
    for prefix in ("postgresql+asyncpg://", "postgresql+psycopg://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql://" + url[len(prefix) :]
    if not url.startswith("postgresql://"):
        raise ValueError("LISTEN/NOTIFY needs a postgresql:// database URL")
    return url


class _Backoff:
    def __init__(self, first: float = 0.1, most: float = 5.0) -> None:
        self.first, self.most, self.next = first, most, first

    def reset(self) -> None:
        self.next = self.first

    def step(self) -> float:
        delay, self.next = self.next, min(self.next * 2, self.most)
        return delay


class QueueNotifier:
    """Publishes ``NOTIFY kirim_queue``; ``notify()`` is cheap and never blocks.

    Calls that arrive while a NOTIFY is in flight collapse into one more, so a burst of
    group commits costs at most two round trips and every commit is followed by a
    notification sent after it.
    """

    def __init__(self, url: str, *, connect_timeout: float = 5.0) -> None:
        self._dsn = asyncpg_dsn(url)
        self._connect_timeout = connect_timeout
        self._pending = asyncio.Event()
        self._conn: asyncpg.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self.sent = 0

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="queue-notifier")

    def notify(self) -> None:
        self._pending.set()

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await _close(self._conn)
        self._conn = None

    async def _run(self) -> None:
        backoff = _Backoff()
        while True:
            await self._pending.wait()
            self._pending.clear()
            try:
                if self._conn is None or self._conn.is_closed():
                    self._conn = await asyncpg.connect(self._dsn, timeout=self._connect_timeout)
                await self._conn.execute(f"NOTIFY {CHANNEL}")
                self.sent += 1
                backoff.reset()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
                # Workers still poll; retry later rather than lose the hint.
                log.warning("queue notify failed: %s", exc)
                await _close(self._conn)
                self._conn = None
                self._pending.set()
                await asyncio.sleep(backoff.step())


class QueueListener:
    """LISTENs on a dedicated connection and calls ``on_wake`` for every notification."""

    def __init__(
        self,
        url: str,
        on_wake: Callable[[], None],
        *,
        connect_timeout: float = 5.0,
        check_interval: float = 5.0,
        max_backoff: float = 5.0,
    ) -> None:
        self._dsn = asyncpg_dsn(url)
        self._on_wake = on_wake
        self._connect_timeout = connect_timeout
        self._check_interval = check_interval
        self._max_backoff = max_backoff
        self.connected = asyncio.Event()
        self.notifications = 0
        self.connects = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Listen until ``stop`` is set, reconnecting after every loss of the connection."""
        backoff = _Backoff(most=self._max_backoff)
        while not stop.is_set():
            try:
                await self._session(stop, backoff)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
                log.warning("queue listener lost PostgreSQL, reconnecting: %s", exc)
            self.connected.clear()
            if not stop.is_set():
                await _wait(stop, backoff.step())

    async def _session(self, stop: asyncio.Event, backoff: _Backoff) -> None:
        lost = asyncio.Event()
        conn = await asyncpg.connect(self._dsn, timeout=self._connect_timeout)
        try:
            conn.add_termination_listener(lambda _c: lost.set())
            await conn.add_listener(CHANNEL, self._received)
            self.connects += 1
            self.connected.set()
            backoff.reset()
            # Anything committed while we were not listening would otherwise wait for a poll.
            self._on_wake()
            while not stop.is_set():
                await _wait_any(stop, lost, self._check_interval)
                if stop.is_set():
                    return
                if lost.is_set() or conn.is_closed():
                    raise ConnectionError("listener connection closed")
                # A silent network loss shows only when we talk: ping now and then.
                await conn.execute("SELECT 1", timeout=self._connect_timeout)
        finally:
            await _close(conn)

    def _received(self, _conn: Any, _pid: int, _channel: str, _payload: str) -> None:
        self.notifications += 1
        self._on_wake()


class QueueSignals:
    """One process's ends of the channel: publish after accepts, wake the local worker.

    On PostgreSQL it NOTIFYs other processes (``publish``) and LISTENs for them (when there
    is a worker); on a SQLite file it does the same with Unix datagram sockets
    (``service.db.wake_socket``), since every process sharing the file is on this host.
    """

    def __init__(
        self,
        url: str,
        *,
        wake: Callable[[], None] | None,
        publish: bool,
        hooks: Callable[[], None] | None = None,
        connect_timeout: float = 5.0,
    ) -> None:
        self._wake = wake
        remote = not url.startswith("sqlite")
        local = wake_socket.directory_for_url(url)
        self.wake_publisher = (
            wake_socket.WakePublisher(local) if local is not None and publish else None
        )
        self.wake_listener = (
            wake_socket.WakeListener(local, wake, hooks) if local is not None and wake else None
        )
        self.notifier = (
            QueueNotifier(url, connect_timeout=connect_timeout) if remote and publish else None
        )
        self.listener = (
            QueueListener(url, wake, connect_timeout=connect_timeout)
            if remote and wake is not None
            else None
        )
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        wake: Callable[[], None] | None,
        publish: bool,
        hooks: Callable[[], None] | None = None,
    ) -> QueueSignals:
        return cls(
            settings.database_url.get_secret_value(),
            wake=wake,
            publish=publish,
            hooks=hooks,
            connect_timeout=settings.database_connect_timeout_ms / 1000,
        )

    def start(self) -> None:
        if self.wake_listener is not None and self.wake_listener.start() and self.wake_publisher:
            self.wake_publisher.own = self.wake_listener.path
        if self.notifier is not None:
            self.notifier.start()
        if self.listener is not None and self._task is None:
            self._task = asyncio.create_task(self.listener.run(self._stop), name="queue-listener")

    def committed(self) -> None:
        """Called after an accept's transaction commits (``GroupCommitter(on_commit=…)``)."""
        if self._wake is not None:
            self._wake()
        if self.notifier is not None:
            self.notifier.notify()
        if self.wake_publisher is not None:
            self.wake_publisher.notify()

    def webhooks_pending(self) -> None:
        """A commit in this process (which runs no dispatcher) queued webhook deliveries."""
        if self.wake_publisher is not None:
            self.wake_publisher.notify(wake_socket.HOOKS)

    async def aclose(self) -> None:
        if self.wake_listener is not None:
            self.wake_listener.close()
        if self.wake_publisher is not None:
            self.wake_publisher.close()
        self._stop.set()
        if self._task is not None:
            self._task.cancel()  # it may be waiting on a connect to a server that is down
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self.notifier is not None:
            await self.notifier.aclose()


async def _close(conn: asyncpg.Connection | None) -> None:
    if conn is None or conn.is_closed():
        return
    try:
        await asyncio.wait_for(conn.close(), timeout=2.0)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
        conn.terminate()


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)


async def _wait_any(a: asyncio.Event, b: asyncio.Event, seconds: float) -> None:
    tasks = {asyncio.create_task(a.wait()), asyncio.create_task(b.wait())}
    try:
        await asyncio.wait(tasks, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
