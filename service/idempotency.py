"""Idempotency-Key for POSTs that create: a retried request never creates twice.

The key is stored, with a fingerprint of the request and the response it got, in the same
transaction as what the request creates; so either both exist or neither does, and a
request that failed validation stores nothing (Stripe's rule). Keys are scoped to the
tenant of the API key. Within one process a map of keys in flight answers concurrent
duplicates with 409; across processes the primary key (tenant_id, key) lets exactly one
insert win, and the losers replay the winner's response.

Usage in a route::

    async with idempotency.claim(tenant_id, key, fingerprint("POST", path, body)) as claim:
        if claim.replay is not None:
            return replayed(claim.replay)
        ...                                   # validate and build the rows
        rows.extra.append(claim.row(202, response_json))
        try:
            await write(rows)
        except IntegrityError:
            return replayed(await claim.resolve_conflict())
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.sql.schema import Table

from service.api.errors import ApiError
from service.db.engine import Database
from service.db.tables import idempotency_keys

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
MAX_KEY_LENGTH = 255
RETRY_AFTER_SECONDS = 1


def parse_key(values: Sequence[str]) -> str | None:
    """The key from the request's header values; 400 when malformed.

    1-255 printable ASCII characters; the quoted form of the IETF draft (``"abc"``) is
    accepted and means the same key as ``abc``.
    """
    if not values:
        return None
    if len(values) > 1:
        raise _bad_key("Send at most one Idempotency-Key header.")
    key = values[0]
    if len(key) >= 2 and key[0] == key[-1] == '"':
        key = key[1:-1]
    if not key.strip():
        raise _bad_key("The Idempotency-Key is empty.")
    if len(key) > MAX_KEY_LENGTH:
        raise _bad_key(f"The Idempotency-Key is longer than {MAX_KEY_LENGTH} characters.")
    if any(not (0x20 <= ord(c) <= 0x7E) for c in key):
        raise _bad_key("The Idempotency-Key must be printable ASCII (a UUID is ideal).")
    return key


def _bad_key(detail: str) -> ApiError:
    return ApiError(400, "invalid-idempotency-key", "Invalid Idempotency-Key", detail)


def fingerprint(method: str, path: str, body: Any) -> str:
    """SHA-256 of method, path and the body as canonical JSON (sorted keys, no spaces)."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    digest = hashlib.sha256()
    for part in (method.upper(), path, canonical):
        digest.update(part.encode())
        digest.update(b"\n")
    return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class Replay:
    status: int
    body: str  # JSON text of the original response


class Claim:
    """One request's hold on a key: a replay to return, or the row to store with the work."""

    def __init__(
        self, store: Idempotency, tenant_id: str, key: str | None, fp: str, now: float
    ) -> None:
        self._store = store
        self.tenant_id = tenant_id
        self.key = key
        self.fingerprint = fp
        self.now = now
        self.replay: Replay | None = None

    def row(self, status: int, body: str) -> list[tuple[Table, dict[str, Any]]]:
        """The row(s) to insert in the transaction that creates (none without a key)."""
        if self.key is None:
            return []
        return [
            (
                idempotency_keys,
                {
                    "tenant_id": self.tenant_id,
                    "key": self.key,
                    "fingerprint": self.fingerprint,
                    "status": "done",
                    "response_status": status,
                    "response_body": body,
                    "created_at": self.now,
                    "expires_at": self.now + self._store.ttl,
                },
            )
        ]

    async def resolve_conflict(self) -> Replay | None:
        """After a unique violation: the winner's response, 422 or 409; None if no key row."""
        if self.key is None:
            return None
        return await self._store.lookup(self.tenant_id, self.key, self.fingerprint, self.now)


class Idempotency:
    """The keys of one process: the in-flight map and the table behind it."""

    def __init__(self, db: Database, *, ttl: float, prune_every: float = 60.0) -> None:
        self.db = db
        self.ttl = ttl
        self._prune_every = min(prune_every, ttl)
        self._last_prune = 0.0
        self._in_flight: set[tuple[str, str]] = set()

    def claim(self, tenant_id: str, key: str | None, fp: str, now: float | None = None) -> Claiming:
        """``async with`` it: the Claim, held until the block ends (409 if already held)."""
        return Claiming(self, Claim(self, tenant_id, key, fp, time.time() if now is None else now))

    async def lookup(self, tenant_id: str, key: str, fp: str, now: float) -> Replay | None:
        """The stored response for this key; 422 on another body, 409 while in flight."""
        stmt = select(
            idempotency_keys.c.fingerprint,
            idempotency_keys.c.status,
            idempotency_keys.c.response_status,
            idempotency_keys.c.response_body,
            idempotency_keys.c.expires_at,
        ).where(idempotency_keys.c.tenant_id == tenant_id, idempotency_keys.c.key == key)
        async with self.db.read() as conn:
            row = (await conn.execute(stmt)).first()
        if row is None:
            return None
        if row.expires_at <= now:
            # Past retention the key is free again; drop it so the new insert can win.
            await self._delete_expired(now, tenant_id=tenant_id, key=key)
            return None
        if row.fingerprint != fp:
            raise ApiError(
                422,
                "idempotency-key-reused",
                "Idempotency-Key reused with a different request",
                "This key was first used with another method, path or body; use a new key.",
            )
        if row.status != "done" or row.response_status is None or row.response_body is None:
            raise _in_flight()
        return Replay(row.response_status, row.response_body)

    async def prune(self, now: float | None = None) -> int:
        """Delete every key past its retention; returns how many."""
        return await self._delete_expired(time.time() if now is None else now)

    async def _maybe_prune(self, now: float) -> None:
        if now - self._last_prune >= self._prune_every:
            self._last_prune = now
            await self._delete_expired(now)

    async def _delete_expired(
        self, now: float, *, tenant_id: str | None = None, key: str | None = None
    ) -> int:
        stmt = delete(idempotency_keys).where(idempotency_keys.c.expires_at <= now)
        if tenant_id is not None and key is not None:
            stmt = stmt.where(
                idempotency_keys.c.tenant_id == tenant_id, idempotency_keys.c.key == key
            )
        async with self.db.write() as conn:
            result = await conn.execute(stmt)
        return int(getattr(result, "rowcount", 0) or 0)


class Claiming:
    """The context of ``Idempotency.claim``; a plain class, as most requests carry no key
    and should not pay for a generator-based context manager."""

    __slots__ = ("_claim", "_slot", "_store")

    def __init__(self, store: Idempotency, claim: Claim) -> None:
        self._store = store
        self._claim = claim
        self._slot: tuple[str, str] | None = None

    async def __aenter__(self) -> Claim:
        claim = self._claim
        if claim.key is None:
            return claim
        slot = (claim.tenant_id, claim.key)
        in_flight = self._store._in_flight
        if slot in in_flight:
            raise _in_flight()
        in_flight.add(slot)
        self._slot = slot
        try:
            await self._store._maybe_prune(claim.now)
            claim.replay = await self._store.lookup(
                claim.tenant_id, claim.key, claim.fingerprint, claim.now
            )
        except BaseException:
            self._release()
            raise
        return claim

    async def __aexit__(self, *exc: object) -> None:
        self._release()

    def _release(self) -> None:
        if self._slot is not None:
            self._store._in_flight.discard(self._slot)
            self._slot = None


def _in_flight() -> ApiError:
    return ApiError(
        409,
        "idempotency-key-in-flight",
        "A request with this Idempotency-Key is still in progress",
        "Retry after it has finished; the retry will get its response.",
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )
