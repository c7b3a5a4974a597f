"""LISTEN/NOTIFY on the real PostgreSQL: delivery, coalescing, reconnect after a lost session."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncpg
import pytest

from service.db.notify import CHANNEL, QueueListener, QueueNotifier, QueueSignals, asyncpg_dsn
from tests.scaleout.cluster import fresh_pg


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    with fresh_pg(migrated=False) as url:
        yield url


class Wakes:
    def __init__(self) -> None:
        self.count = 0
        self.event = asyncio.Event()
        self.times: list[float] = []

    def __call__(self) -> None:
        self.count += 1
        self.times.append(time.perf_counter())
        self.event.set()

    async def next(self, seconds: float = 5.0) -> None:
        await asyncio.wait_for(self.event.wait(), seconds)
        self.event.clear()


async def _started(listener: QueueListener, stop: asyncio.Event) -> asyncio.Task[None]:
    task = asyncio.create_task(listener.run(stop))
    await asyncio.wait_for(listener.connected.wait(), 10)
    return task


async def test_notify_from_another_connection_wakes_the_listener(pg_url: str) -> None:
    wakes = Wakes()
    listener = QueueListener(pg_url, wakes, check_interval=0.5)
    stop = asyncio.Event()
    task = await _started(listener, stop)
    await wakes.next()  # the wake every (re)connect gives
    other = await asyncpg.connect(asyncpg_dsn(pg_url))
    try:
        latencies = []
        for _ in range(20):
            sent = time.perf_counter()
            await other.execute(f"NOTIFY {CHANNEL}")
            await wakes.next()
            latencies.append(wakes.times[-1] - sent)
        assert listener.notifications == 20
        # Far below any poll interval, with room for a loaded machine.
        assert sorted(latencies)[10] < 0.25, latencies
    finally:
        await other.close()
        stop.set()
        await asyncio.wait_for(task, 10)


async def test_listener_reconnects_after_its_session_is_killed(pg_url: str) -> None:
    wakes = Wakes()
    listener = QueueListener(pg_url, wakes, check_interval=0.2, max_backoff=0.5)
    stop = asyncio.Event()
    task = await _started(listener, stop)
    await wakes.next()
    admin = await asyncpg.connect(asyncpg_dsn(pg_url))
    try:
        killed = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        assert killed >= 1
        # The new session wakes the worker once (work may have arrived meanwhile) ...
        await wakes.next(10)
        await asyncio.wait_for(listener.connected.wait(), 10)
        assert listener.connects == 2
        # ... and notifications flow again.
        await admin.execute(f"NOTIFY {CHANNEL}")
        await wakes.next()
        assert listener.notifications == 1
    finally:
        await admin.close()
        stop.set()
        await asyncio.wait_for(task, 10)
    assert task.done() and task.exception() is None


async def _until(condition: Callable[[], bool], within: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_notifier_coalesces_bursts_and_follows_each_commit(pg_url: str) -> None:
    wakes = Wakes()
    listener = QueueListener(pg_url, wakes)
    stop = asyncio.Event()
    task = await _started(listener, stop)
    await wakes.next()
    notifier = QueueNotifier(pg_url)
    notifier.start()
    try:
        for _ in range(200):
            notifier.notify()
        await wakes.next()
        await asyncio.sleep(0.2)
        assert 1 <= notifier.sent <= 2
        before = notifier.sent
        notifier.notify()  # a later commit gets its own notification
        await wakes.next()
        # The listener can hear the NOTIFY before the notifier's call returns.
        await _until(lambda: notifier.sent == before + 1)
    finally:
        await notifier.aclose()
        stop.set()
        await asyncio.wait_for(task, 10)


async def test_notifier_survives_a_lost_connection(pg_url: str) -> None:
    wakes = Wakes()
    listener = QueueListener(pg_url, wakes, check_interval=0.2, max_backoff=0.3)
    stop = asyncio.Event()
    task = await _started(listener, stop)
    await wakes.next()
    notifier = QueueNotifier(pg_url)
    notifier.start()
    admin = await asyncpg.connect(asyncpg_dsn(pg_url))
    try:
        notifier.notify()
        await wakes.next()
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        await wakes.next(10)  # the listener's reconnect wake
        assert listener.connects == 2
        wakes.event.clear()
        got, sent = wakes.count, notifier.sent
        notifier.notify()  # its connection is dead too: it must reconnect and deliver
        await wakes.next(10)
        assert wakes.count > got
        await _until(lambda: notifier.sent == sent + 1)
    finally:
        await admin.close()
        await notifier.aclose()
        stop.set()
        await asyncio.wait_for(task, 10)


async def test_signals_on_sqlite_wake_the_local_worker_and_other_processes(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path}/kirim.db"
    here, there = Wakes(), Wakes()
    api = QueueSignals(url, wake=here, publish=True)  # `serve` with in-process workers
    worker = QueueSignals(url, wake=there, publish=False)  # a `kirim worker` beside it
    assert api.notifier is None and api.listener is None  # no PostgreSQL connections
    api.start()
    worker.start()
    try:
        await here.next()  # each listener wakes once as it starts
        await there.next()
        api.committed()
        await there.next()  # through the wake socket
        await asyncio.sleep(0.05)
        # The committing process wakes its own worker directly, not through its socket too.
        assert here.count == 2 and there.count == 2
    finally:
        await api.aclose()
        await worker.aclose()


async def test_signals_on_postgresql_publish_and_listen(pg_url: str) -> None:
    here, there = Wakes(), Wakes()
    api = QueueSignals(pg_url, wake=None, publish=True)  # `serve --no-workers`
    worker = QueueSignals(pg_url, wake=there, publish=False)  # `kirim worker`
    assert api.listener is None and worker.notifier is None
    api.start()
    worker.start()
    try:
        assert worker.listener is not None
        await asyncio.wait_for(worker.listener.connected.wait(), 10)
        await there.next()
        api.committed()
        await there.next()
        assert here.count == 0
    finally:
        await api.aclose()
        await worker.aclose()


def test_dsn_spellings() -> None:
    assert asyncpg_dsn("postgres://u@h/db") == "postgresql://u@h/db"
    assert asyncpg_dsn("postgresql+asyncpg://u@h/db?x=1") == "postgresql://u@h/db?x=1"
    assert asyncpg_dsn("postgresql://u@h/db") == "postgresql://u@h/db"
    with pytest.raises(ValueError):
        asyncpg_dsn("sqlite:///x.db")
