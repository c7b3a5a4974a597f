"""Token-bucket rate limits per API key and per tenant.

Each bucket holds up to ``burst`` tokens and refills at ``per_second``; a request takes one
token or is refused with the time until one is available. On PostgreSQL the buckets live in
the ``rate_buckets`` table and every take is one atomic upsert, timed by the database clock,
so all API processes on all hosts share one budget. SQLite means a single node, so the
buckets live in process memory there.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from sqlalchemy import text

from service.db.engine import Database


@dataclass(frozen=True, slots=True)
class Rate:
    per_second: float
    burst: float

    @property
    def enabled(self) -> bool:
        return self.per_second > 0


OFF = Rate(0.0, 0.0)


def parse_rate(value: str) -> Rate:
    """``"0"`` (off), ``"RATE"`` (burst = one second's worth, at least 1) or ``"RATE,BURST"``."""
    parts = [p.strip() for p in value.split(",")]
    if len(parts) > 2 or not parts[0]:
        raise ValueError(f"expected RATE or RATE,BURST, got {value!r}")
    try:
        rate = float(parts[0])
        burst = float(parts[1]) if len(parts) == 2 else max(1.0, rate)
    except ValueError:
        raise ValueError(f"expected numbers in {value!r}") from None
    if not (math.isfinite(rate) and math.isfinite(burst)) or rate < 0 or burst < 0:
        raise ValueError(f"rate and burst must be finite and >= 0, got {value!r}")
    if rate == 0:
        return OFF
    if burst < 1:
        raise ValueError(f"burst must be at least 1, got {value!r}")
    return Rate(rate, burst)


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    retry_after: float = 0.0  # seconds until a token is available, when refused


def available(tokens: float, updated_at: float, now: float, rate: Rate) -> float:
    """Tokens in a bucket at ``now`` (a clock going backwards refills nothing)."""
    return min(rate.burst, tokens + max(0.0, now - updated_at) * rate.per_second)


def wait_for_token(avail: float, rate: Rate) -> float:
    return max(0.0, (1.0 - avail) / rate.per_second)


class LocalBuckets:
    """Buckets in this process's memory; full buckets are forgotten to bound memory."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self._buckets: dict[str, tuple[float, float]] = {}
        self._max_entries = max_entries

    def take(self, name: str, rate: Rate, now: float) -> Decision:
        tokens, updated = self._buckets.get(name, (rate.burst, now))
        avail = available(tokens, updated, now, rate)
        if avail < 1.0:
            self._buckets[name] = (avail, now)
            return Decision(False, wait_for_token(avail, rate))
        if name not in self._buckets and len(self._buckets) >= self._max_entries:
            self._forget_full(now, rate)
        self._buckets[name] = (avail - 1.0, now)
        return Decision(True)

    def refund(self, name: str, rate: Rate, now: float) -> None:
        if name in self._buckets:
            tokens, updated = self._buckets[name]
            self._buckets[name] = (min(rate.burst, available(tokens, updated, now, rate) + 1), now)

    def _forget_full(self, now: float, rate: Rate) -> None:
        items = self._buckets.items()
        full = [n for n, (t, u) in items if available(t, u, now, rate) >= rate.burst]
        for n in full:
            del self._buckets[n]


_PG_TAKE = text(
    """
    INSERT INTO rate_buckets AS b (bucket, tokens, updated_at)
    VALUES (:bucket, CAST(:burst AS double precision) - 1,
            extract(epoch FROM clock_timestamp())::double precision)
    ON CONFLICT (bucket) DO UPDATE
    SET tokens = LEAST(CAST(:burst AS double precision),
                       b.tokens + GREATEST(0, EXCLUDED.updated_at - b.updated_at)
                                  * CAST(:rate AS double precision)) - 1,
        updated_at = GREATEST(b.updated_at, EXCLUDED.updated_at)
    WHERE LEAST(CAST(:burst AS double precision),
                b.tokens + GREATEST(0, EXCLUDED.updated_at - b.updated_at)
                           * CAST(:rate AS double precision)) >= 1
    RETURNING b.tokens
    """
)
_PG_PEEK = text(
    "SELECT tokens, updated_at, extract(epoch FROM clock_timestamp())::double precision AS now "
    "FROM rate_buckets WHERE bucket = :bucket"
)
_PG_REFUND = text(
    "UPDATE rate_buckets SET tokens = LEAST(CAST(:burst AS double precision), tokens + 1) "
    "WHERE bucket = :bucket"
)


class SharedBuckets:
    """Buckets in PostgreSQL: one upsert per granted request, timed by the database clock.

    After a refusal the bucket cannot hold a token before ``retry_after`` has passed (only
    refills add tokens), so this process refuses locally until then without asking again:
    a flood costs the database one statement per bucket per refill period.
    """

    def __init__(self, db: Database) -> None:
        self._db = db
        self._blocked_until: dict[str, float] = {}

    async def take(self, name: str, rate: Rate) -> Decision:
        local_now = time.monotonic()
        until = self._blocked_until.get(name)
        if until is not None:
            if local_now < until:
                return Decision(False, until - local_now)
            del self._blocked_until[name]
        params = {"bucket": name, "burst": rate.burst, "rate": rate.per_second}
        async with self._db.write() as conn:
            granted = (await conn.execute(_PG_TAKE, params)).first()
            if granted is not None:
                return Decision(True)
            row = (await conn.execute(_PG_PEEK, {"bucket": name})).first()
        avail = 0.0 if row is None else available(row.tokens, row.updated_at, row.now, rate)
        wait = wait_for_token(avail, rate)
        if len(self._blocked_until) > 10_000:
            self._blocked_until.clear()
        self._blocked_until[name] = local_now + wait
        return Decision(False, wait)

    async def refund(self, name: str, rate: Rate) -> None:
        async with self._db.write() as conn:
            await conn.execute(_PG_REFUND, {"bucket": name, "burst": rate.burst})


class RateLimiter:
    """Per-key and per-tenant limits; a request refused by either takes nothing from both."""

    def __init__(self, db: Database, *, per_key: Rate, per_tenant: Rate) -> None:
        self.per_key = per_key
        self.per_tenant = per_tenant
        self._local = LocalBuckets() if db.is_sqlite else None
        self._shared = None if db.is_sqlite else SharedBuckets(db)

    @property
    def enabled(self) -> bool:
        return self.per_key.enabled or self.per_tenant.enabled

    async def check(self, *, key_id: str, tenant_id: str) -> Decision:
        key_bucket, tenant_bucket = f"key:{key_id}", f"tenant:{tenant_id}"
        if self.per_key.enabled:
            decision = await self._take(key_bucket, self.per_key)
            if not decision.allowed:
                return decision
        if self.per_tenant.enabled:
            decision = await self._take(tenant_bucket, self.per_tenant)
            if not decision.allowed:
                if self.per_key.enabled:
                    await self._refund(key_bucket, self.per_key)
                return decision
        return Decision(True)

    async def _take(self, name: str, rate: Rate) -> Decision:
        if self._local is not None:
            return self._local.take(name, rate, time.monotonic())
        assert self._shared is not None
        return await self._shared.take(name, rate)

    async def _refund(self, name: str, rate: Rate) -> None:
        if self._local is not None:
            self._local.refund(name, rate, time.monotonic())
        elif self._shared is not None:
            await self._shared.refund(name, rate)
