"""SQLite transactions of ``Database``: the writer begins IMMEDIATE, a reader does not, and
the one writer connection, kept between transactions, is handed on after every outcome.

Real database files; a second plain sqlite3 connection plays another process.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from service.db.engine import Database

pytestmark = pytest.mark.asyncio


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'w.db'}")
    async with database.write() as conn:
        await conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
    yield database
    await database.dispose()


def _other(db: Database) -> sqlite3.Connection:
    """Another process's connection that never waits for a lock."""
    return sqlite3.connect(db.url[len("sqlite:///") :], isolation_level=None, timeout=0)


def _rows(db: Database) -> list[int]:
    other = _other(db)
    try:
        return [x for (x,) in other.execute("SELECT x FROM t ORDER BY x")]
    finally:
        other.close()


async def test_a_write_holds_the_write_lock_from_its_begin(db: Database) -> None:
    other = _other(db)
    try:
        async with db.write():
            # No statement yet: only BEGIN IMMEDIATE takes the lock this early.
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")
        other.execute("BEGIN IMMEDIATE")  # free again once committed
        other.execute("ROLLBACK")
    finally:
        other.close()


async def test_a_read_does_not_take_the_write_lock(db: Database) -> None:
    other = _other(db)
    try:
        async with db.read() as conn:
            await conn.exec_driver_sql("SELECT count(*) FROM t")
            other.execute("BEGIN IMMEDIATE")
            other.execute("ROLLBACK")
    finally:
        other.close()


async def test_after_a_failed_write_nothing_stays_and_the_next_write_commits(
    db: Database,
) -> None:
    with pytest.raises(RuntimeError):
        async with db.write() as conn:
            await conn.exec_driver_sql("INSERT INTO t VALUES (1)")
            raise RuntimeError("boom")
    async with asyncio.timeout(5), db.write() as conn:
        await conn.exec_driver_sql("INSERT INTO t VALUES (2)")
    assert _rows(db) == [2]


async def test_a_cancelled_write_hands_the_writer_on(db: Database) -> None:
    entered = asyncio.Event()

    async def stuck() -> None:
        async with db.write() as conn:
            await conn.exec_driver_sql("INSERT INTO t VALUES (1)")
            entered.set()
            await asyncio.sleep(60)

    task = asyncio.create_task(stuck())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    async with asyncio.timeout(5), db.write() as conn:
        await conn.exec_driver_sql("INSERT INTO t VALUES (2)")
    assert _rows(db) == [2]


async def test_concurrent_writes_take_turns_and_all_commit(db: Database) -> None:
    inside = 0
    most = 0

    async def one(i: int) -> None:
        nonlocal inside, most
        async with db.write() as conn:
            inside += 1
            most = max(most, inside)
            await asyncio.sleep(0.001)  # let the others try to come in
            await conn.exec_driver_sql(f"INSERT INTO t VALUES ({i})")
            inside -= 1

    await asyncio.gather(*(one(i) for i in range(20)))
    assert most == 1
    assert _rows(db) == list(range(20))
