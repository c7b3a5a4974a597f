"""PostgreSQL connections are pinged only after sitting unused in the pool.

A ping before every transaction cost a tenth of a worker's CPU. Here the server ends a
pooled connection's backend (as a restart does): one that was idle long enough is found
dead by its ping and replaced before anyone uses it; one that was not fails its first
statement as "database unavailable", and the next checkout gets a fresh connection.
"""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from sqlalchemy import text

from service.db import engine as engine_module
from service.db.engine import Database, DatabaseUnavailable
from tests.support.databases import PG_ADMIN_DB, PG_HOST, PG_PORT, PG_USER, pg_url

pytestmark = pytest.mark.asyncio


async def _backend(db: Database) -> int:
    async with db.read() as conn:
        pid = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar()
    assert isinstance(pid, int)
    return pid


async def _terminate(pid: int) -> None:
    admin = await asyncpg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, database=PG_ADMIN_DB)
    try:
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
        # The backend gets a signal; wait until it is gone.
        for _ in range(500):
            if not await admin.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid
            ):
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"backend {pid} still there")
    finally:
        await admin.close()


async def test_a_connection_ended_while_idle_is_replaced_unseen(
    pg_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = Database(pg_url(pg_database))
    try:
        first = await _backend(db)
        await _terminate(first)
        monkeypatch.setattr(engine_module, "PING_AFTER_IDLE", 0.0)  # everything is "idle"
        second = await _backend(db)  # no error: the ping caught it
        assert second != first
    finally:
        await db.dispose()


async def test_a_recently_used_connection_is_not_pinged_and_recovers_after_one_failure(
    pg_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine_module, "PING_AFTER_IDLE", 3600.0)
    db = Database(pg_url(pg_database))
    try:
        first = await _backend(db)
        await _terminate(first)
        with pytest.raises(DatabaseUnavailable):
            await _backend(db)
        assert await _backend(db) != first
    finally:
        await db.dispose()
