"""The per-process API key cache: revocation through the API is immediate, elsewhere bounded.

A key revoked by another process (here: straight in the database, as ``kirim keys revoke``
does) keeps working in an API process for at most ``api_key_cache_seconds``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest

from service.db import keys as keys_module
from service.db.engine import Database, DatabaseUnavailable
from service.db.keys import KeyCache, KeyRecord, hash_key, revoke_key
from service.db.tables import api_keys
from tests.support.app import live_app, settings_for
from tests.tenancy.helpers import GOOD, bearer, new_key

pytestmark = pytest.mark.asyncio


async def _revoke_elsewhere(url: str, key_id: str) -> None:
    db = Database(url)
    try:
        assert await revoke_key(db, key_id, tenant_id=None, now=time.time())
    finally:
        await db.dispose()


async def test_revoked_elsewhere_works_until_the_cache_expires(database_url: str) -> None:
    # A long TTL makes "still cached" certain; the short one below shows it ends.
    settings = settings_for(database_url, api_key_cache_seconds=300)
    async with live_app(settings, run_workers=False) as app:
        key, key_id = await new_key(database_url, tenant="t")
        admin, _ = await new_key(database_url, tenant="t")
        assert (
            await app.client.post("/v1/messages", json=GOOD, headers=bearer(key))
        ).status_code == 202
        await _revoke_elsewhere(database_url, key_id)
        # The documented window: this process still trusts what it looked up.
        r = await app.client.post("/v1/messages", json=GOOD, headers=bearer(key))
        assert r.status_code == 202
        # Revoking through this process's API forgets the key here at once.
        other, other_id = await new_key(database_url, tenant="t")
        assert (await app.client.get("/v1/messages", headers=bearer(other))).status_code == 200
        r = await app.client.delete(f"/v1/keys/{other_id}", headers=bearer(admin))
        assert r.status_code == 204
        assert (await app.client.get("/v1/messages", headers=bearer(other))).status_code == 401
        r = await app.client.post("/v1/messages", json=GOOD, headers=bearer(other))
        assert r.status_code == 401


async def test_revoked_elsewhere_fails_within_the_ttl(database_url: str) -> None:
    settings = settings_for(database_url, api_key_cache_seconds=0.3)
    async with live_app(settings, run_workers=False) as app:
        key, key_id = await new_key(database_url, tenant="t")
        assert (
            await app.client.post("/v1/messages", json=GOOD, headers=bearer(key))
        ).status_code == 202
        await _revoke_elsewhere(database_url, key_id)
        await asyncio.sleep(0.5)
        r = await app.client.post("/v1/messages", json=GOOD, headers=bearer(key))
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"


async def test_no_cache_reads_every_request(database_url: str) -> None:
    settings = settings_for(database_url, api_key_cache_seconds=0)
    async with live_app(settings, run_workers=False) as app:
        key, key_id = await new_key(database_url, tenant="t")
        assert (await app.client.get("/v1/messages", headers=bearer(key))).status_code == 200
        await _revoke_elsewhere(database_url, key_id)
        assert (await app.client.get("/v1/messages", headers=bearer(key))).status_code == 401


async def test_new_keys_work_at_once_and_expiry_is_exact(database_url: str) -> None:
    settings = settings_for(database_url, api_key_cache_seconds=300)
    async with live_app(settings, run_workers=False) as app:
        # Unknown keys are not remembered: a key stored after a refused try works at once.
        plain = "kirim_created-after-a-refused-try"
        assert (await app.client.get("/v1/messages", headers=bearer(plain))).status_code == 401
        db = Database(database_url)
        try:
            async with db.write() as conn:
                await conn.execute(
                    api_keys.insert().values(
                        id="key_cache_test",
                        tenant_id="t",
                        name="late",
                        prefix=plain[:12],
                        key_hash=hash_key(plain),
                        scopes="messages:read",
                        created_at=time.time(),
                    )
                )
        finally:
            await db.dispose()
        assert (await app.client.get("/v1/messages", headers=bearer(plain))).status_code == 200

        # Long enough that a loaded machine still uses the key before it expires (0.5 s
        # was not, once in CI); the wait below ends after the expiry, wherever it fell.
        short, _ = await new_key(database_url, tenant="t", expires_in=3.0)
        created_by = time.time()
        assert (await app.client.get("/v1/messages", headers=bearer(short))).status_code == 200
        await asyncio.sleep(max(0.0, created_by + 3.0 - time.time()) + 0.2)
        assert (await app.client.get("/v1/messages", headers=bearer(short))).status_code == 401


class CountingReads:
    """The real key lookup, counted, and held at ``gate`` until the test opens it."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, *, fail_first: bool = False) -> None:
        self.calls = 0
        self.gate = asyncio.Event()
        self._fail_first = fail_first
        self._real = keys_module._find_by_hash
        monkeypatch.setattr(keys_module, "_find_by_hash", self)

    async def __call__(self, db: Database, key_hash: str) -> KeyRecord | None:
        self.calls += 1
        await self.gate.wait()
        if self._fail_first and self.calls == 1:
            raise DatabaseUnavailable("the first lookup fails")
        return await self._real(db, key_hash)


@dataclass
class HeldLookups:
    key: str
    key_id: str
    reads: CountingReads
    cache: KeyCache
    db: Database


@contextlib.asynccontextmanager
async def held_lookups(
    database_url: str, monkeypatch: pytest.MonkeyPatch, *, fail_first: bool = False
) -> AsyncIterator[HeldLookups]:
    """A new key and an empty cache whose lookups of it are counted and held."""
    key, key_id = await new_key(database_url, tenant="t")
    reads = CountingReads(monkeypatch, fail_first=fail_first)
    db = Database(database_url)
    try:
        yield HeldLookups(key, key_id, reads, KeyCache(60), db)
    finally:
        await db.dispose()


async def _until(condition: Callable[[], bool]) -> None:
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached in 5 s")


async def test_requests_that_find_the_key_expired_share_one_read(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with held_lookups(database_url, monkeypatch) as h:
        # The first read is held until all 64 requests are waiting (a SQLite read would
        # otherwise finish before the second request starts, and prove nothing).
        tasks = [asyncio.create_task(h.cache.find(h.db, h.key)) for _ in range(64)]
        await _until(lambda: h.reads.calls >= 1)
        await asyncio.sleep(0.05)  # every task has run up to its wait
        h.reads.gate.set()
        found = await asyncio.gather(*tasks)
        assert [r.id if r else None for r in found] == [h.key_id] * 64
        assert h.reads.calls == 1
        assert (await h.cache.find(h.db, h.key)) == found[0] and h.reads.calls == 1  # cached


async def test_a_failed_shared_read_leaves_each_request_to_read_again(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with held_lookups(database_url, monkeypatch, fail_first=True) as h:
        tasks = [asyncio.create_task(h.cache.find(h.db, h.key)) for _ in range(3)]
        await _until(lambda: h.reads.calls == 1)
        await asyncio.sleep(0.05)  # the other two wait on the first one's read
        assert h.reads.calls == 1
        h.reads.gate.set()
        found = await asyncio.gather(*tasks, return_exceptions=True)
        assert isinstance(found[0], DatabaseUnavailable)
        assert [getattr(r, "id", None) for r in found[1:]] == [h.key_id, h.key_id]
        assert h.reads.calls == 3


async def test_a_request_after_a_revocation_does_not_share_an_earlier_read(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with held_lookups(database_url, monkeypatch) as h:
        before = asyncio.create_task(h.cache.find(h.db, h.key))
        await _until(lambda: h.reads.calls == 1)
        await _revoke_elsewhere(database_url, h.key_id)
        h.cache.forget(h.key_id)
        after = asyncio.create_task(h.cache.find(h.db, h.key))
        await _until(lambda: h.reads.calls == 2)  # its own read, not the one in progress
        h.reads.gate.set()
        record = await after
        assert record is not None and record.revoked_at is not None
        await before
