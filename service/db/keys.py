"""API keys: random, shown once, stored only as a SHA-256 hash and a display prefix."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, func, select, update

from service.db.engine import Database
from service.db.tables import api_keys
from service.domain.ids import new_id

KEY_PREFIX = "kirim_"
ALL_SCOPES = ("messages:send", "messages:read", "webhooks:manage", "keys:manage", "admin")
DEFAULT_SCOPES = ("messages:send", "messages:read", "webhooks:manage")


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def generate_key() -> str:
    # 32 random bytes (256 bits); the prefix makes leaked keys easy to scan for.
    return KEY_PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class KeyRecord:
    id: str
    tenant_id: str
    name: str
    prefix: str
    scopes: frozenset[str]
    expires_at: float | None
    revoked_at: float | None
    last_used_at: float | None
    created_at: float | None = None

    def usable(self, now: float) -> bool:
        if self.revoked_at is not None:
            return False
        return self.expires_at is None or now < self.expires_at


async def create_key(
    db: Database,
    *,
    name: str,
    tenant_id: str,
    scopes: tuple[str, ...],
    now: float,
    expires_at: float | None = None,
) -> tuple[str, KeyRecord]:
    """Create a key; the plain key is returned here and never again."""
    unknown = set(scopes) - set(ALL_SCOPES)
    if unknown:
        raise ValueError(f"unknown scopes: {', '.join(sorted(unknown))}")
    key = generate_key()
    record = KeyRecord(
        id=new_id("key", now),
        tenant_id=tenant_id,
        name=name,
        prefix=key[: len(KEY_PREFIX) + 6],
        scopes=frozenset(scopes),
        expires_at=expires_at,
        revoked_at=None,
        last_used_at=None,
        created_at=now,
    )
    async with db.write() as conn:
        await conn.execute(
            api_keys.insert().values(
                id=record.id,
                tenant_id=tenant_id,
                name=name,
                prefix=record.prefix,
                key_hash=hash_key(key),
                scopes=" ".join(sorted(scopes)),
                created_at=now,
                expires_at=expires_at,
            )
        )
    return key, record


_COLUMNS = (
    api_keys.c.id,
    api_keys.c.tenant_id,
    api_keys.c.name,
    api_keys.c.prefix,
    api_keys.c.scopes,
    api_keys.c.expires_at,
    api_keys.c.revoked_at,
    api_keys.c.last_used_at,
    api_keys.c.created_at,
)


def _record(row: Any) -> KeyRecord:
    return KeyRecord(
        id=row.id,
        tenant_id=row.tenant_id,
        name=row.name,
        prefix=row.prefix,
        scopes=frozenset(row.scopes.split()),
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
        last_used_at=row.last_used_at,
        created_at=row.created_at,
    )


async def find_key(db: Database, key: str) -> KeyRecord | None:
    """The record of a presented key (by its hash), usable or not."""
    return await _find_by_hash(db, hash_key(key))


_FIND = select(*_COLUMNS).where(api_keys.c.key_hash == bindparam("key_hash"))


async def _find_by_hash(db: Database, key_hash: str) -> KeyRecord | None:
    async with db.read() as conn:
        row = (await conn.execute(_FIND, {"key_hash": key_hash})).first()
    return None if row is None else _record(row)


_FAILED: Any = object()  # a shared key lookup that gave no answer


class KeyCache:
    """Keys this process looked up recently, by hash, trusted for ``ttl`` seconds.

    A request then reads nothing to authenticate. Revoking through this process (``forget``)
    takes effect here at once; a key revoked through another process or ``kirim keys
    revoke`` keeps working in this one for at most ``ttl`` seconds. Expiry needs no reread
    (the record carries ``expires_at``), and unknown keys are not cached, so a key created
    elsewhere works at once. ``ttl`` 0 reads on every request.
    """

    def __init__(self, ttl: float, *, max_entries: int = 10_000) -> None:
        self.ttl = ttl
        self._max_entries = max_entries
        self._items: dict[str, tuple[float, KeyRecord]] = {}
        # Bumped by ``forget``: a lookup that raced a revocation does not store its answer.
        self._generation = 0
        # Lookups in progress: when an entry expires under load, the requests that find it
        # gone share one read instead of each taking a connection (64 at once, every ttl).
        self._reading: dict[str, asyncio.Future[KeyRecord | None]] = {}

    async def find(self, db: Database, key: str) -> KeyRecord | None:
        key_hash = hash_key(key)
        now = time.monotonic()
        hit = self._items.get(key_hash)
        if hit is not None and hit[0] > now:
            return hit[1]
        if self.ttl <= 0:
            return await _find_by_hash(db, key_hash)
        reading = self._reading.get(key_hash)
        if reading is not None:
            shared = await asyncio.shield(reading)
            # The first request's read failed or was cancelled: read for this one.
            return await _find_by_hash(db, key_hash) if shared is _FAILED else shared
        reading = asyncio.get_running_loop().create_future()
        self._reading[key_hash] = reading
        outcome: Any = _FAILED
        try:
            record = await self._read(db, key_hash, now)
            outcome = record
            return record
        finally:
            if self._reading.get(key_hash) is reading:
                del self._reading[key_hash]
            reading.set_result(outcome)

    async def _read(self, db: Database, key_hash: str, now: float) -> KeyRecord | None:
        generation = self._generation
        record = await _find_by_hash(db, key_hash)
        if record is None or generation != self._generation:
            self._items.pop(key_hash, None)
            return record
        if len(self._items) >= self._max_entries:
            self._items.clear()
        self._items[key_hash] = (now + self.ttl, record)
        return record

    def forget(self, key_id: str) -> None:
        """Drop ``key_id`` at once (after revoking it)."""
        self._generation += 1
        # A request from now on must not share a read that began before the revocation.
        self._reading.clear()
        for key_hash in [h for h, (_, r) in self._items.items() if r.id == key_id]:
            del self._items[key_hash]


async def get_key(db: Database, key_id: str, *, tenant_id: str | None) -> KeyRecord | None:
    """One key by id; ``tenant_id`` None (operators on the command line) sees every tenant."""
    stmt = select(*_COLUMNS).where(api_keys.c.id == key_id)
    if tenant_id is not None:
        stmt = stmt.where(api_keys.c.tenant_id == tenant_id)
    async with db.read() as conn:
        row = (await conn.execute(stmt)).first()
    return None if row is None else _record(row)


async def list_keys(db: Database, *, tenant_id: str | None) -> list[KeyRecord]:
    """Keys, oldest first; ``tenant_id`` None lists every tenant's."""
    stmt = select(*_COLUMNS).order_by(api_keys.c.created_at, api_keys.c.id)
    if tenant_id is not None:
        stmt = stmt.where(api_keys.c.tenant_id == tenant_id)
    async with db.read() as conn:
        rows = (await conn.execute(stmt)).all()
    return [_record(r) for r in rows]


async def revoke_key(db: Database, key_id: str, *, tenant_id: str | None, now: float) -> bool:
    """Revoke a key; False if there is none. Callers in the API also ``KeyCache.forget`` it.

    Revoking twice keeps the first revocation time.
    """
    stmt = (
        update(api_keys)
        .where(api_keys.c.id == key_id)
        .values(revoked_at=func.coalesce(api_keys.c.revoked_at, now))
    )
    if tenant_id is not None:
        stmt = stmt.where(api_keys.c.tenant_id == tenant_id)
    async with db.write() as conn:
        result = await conn.execute(stmt)
    return bool(getattr(result, "rowcount", 0))


async def touch_key(db: Database, key_id: str, now: float) -> None:
    async with db.write() as conn:
        await conn.execute(update(api_keys).where(api_keys.c.id == key_id).values(last_used_at=now))
