"""Request dependencies: the runtime and the authenticated key."""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import Request

from service.api.errors import ApiError
from service.api.runtime import Runtime
from service.db.keys import KeyCache, KeyRecord, touch_key
from service.idempotency import Idempotency
from service.ratelimit import RateLimiter, parse_rate

_TOUCH_EVERY = 60.0  # seconds; last_used_at need not cost a write per request


@dataclass(frozen=True, slots=True)
class Principal:
    key: KeyRecord

    @property
    def tenant_id(self) -> str:
        return self.key.tenant_id


def runtime_of(request: Request) -> Runtime:
    rt: Runtime = request.app.state.runtime
    return rt


# Dependencies are coroutines: FastAPI runs plain functions in a thread pool, and a thread
# hand-off per request costs more than everything these do.
async def runtime(request: Request) -> Runtime:
    return runtime_of(request)


@dataclass(frozen=True, slots=True)
class Guards:
    """Per-process state that protects tenants from each other and from retries."""

    runtime: Runtime
    idempotency: Idempotency
    limiter: RateLimiter
    keys: KeyCache


async def guards(request: Request) -> Guards:
    return guards_of(request)


def guards_of(request: Request) -> Guards:
    return guards_for(request.app)


def guards_for(app: Any) -> Guards:
    """The app's guards, built on first use from its runtime (and rebuilt if that changes)."""
    rt: Runtime = app.state.runtime
    current: Guards | None = getattr(app.state, "guards", None)
    if current is None or current.runtime is not rt:
        current = Guards(
            rt,
            Idempotency(rt.db, ttl=rt.settings.idempotency_ttl),
            RateLimiter(
                rt.db,
                per_key=parse_rate(rt.settings.rate_limit_per_key),
                per_tenant=parse_rate(rt.settings.rate_limit_per_tenant),
            ),
            KeyCache(rt.settings.api_key_cache_seconds),
        )
        app.state.guards = current
    return current


def _unauthorised(detail: str) -> ApiError:
    return ApiError(
        401, "unauthorized", "Authentication required", detail, {"WWW-Authenticate": "Bearer"}
    )


def require(scope: str) -> Callable[[Request], Awaitable[Principal]]:
    """A dependency that authenticates the bearer key, checks it carries ``scope`` and
    applies the per-key and per-tenant rate limits (429 before anything is done)."""

    async def dependency(request: Request) -> Principal:
        header = request.headers.get("authorization", "")
        return await authenticate(guards_of(request), header, scope)

    return dependency


async def authenticate(guard: Guards, authorization: str, scope: str) -> Principal:
    """The principal of an ``Authorization`` header value, or the ApiError to answer."""
    kind, _, key = authorization.partition(" ")
    if kind.lower() != "bearer" or not key.strip():
        raise _unauthorised("Send 'Authorization: Bearer <api key>'.")
    rt = guard.runtime
    record = await guard.keys.find(rt.db, key.strip())
    now = time.time()
    if record is None or not record.usable(now):
        raise _unauthorised("The API key is unknown, revoked or expired.")
    if scope not in record.scopes:
        raise ApiError(403, "forbidden", "Missing scope", f"This key lacks the {scope} scope.")
    limiter = guard.limiter
    if limiter.enabled:
        decision = await limiter.check(key_id=record.id, tenant_id=record.tenant_id)
        if not decision.allowed:
            wait = max(1, math.ceil(decision.retry_after))
            raise ApiError(
                429,
                "rate-limited",
                "Too many requests",
                f"This key or its tenant is over its request rate; retry in {wait} s.",
                {"Retry-After": str(wait)},
            )
    if now - rt.key_touched.get(record.id, 0.0) > _TOUCH_EVERY:
        rt.key_touched[record.id] = now
        await touch_key(rt.db, record.id, now)
    return Principal(record)
